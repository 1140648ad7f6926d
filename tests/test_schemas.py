"""The HTTP answer's results ARE the library's certificate type, and its JSON / OpenAPI shape has every field."""

from __future__ import annotations

import json

import pytest

from frs_ray.certify.certificate import ABSTAIN, ASSUMPTIONS, Certificate, Radii, Radius
from frs_ray.certify.smooth import VotePlan, finalize_certificate
from frs_ray.config import CertifyConfig
from frs_ray.serving import client, schemas

FIELDS = {
    "text",
    "certified_label",
    "label_name",
    "abstained",
    "votes",
    "select_votes",
    "p_lower",
    "radius",
    "spans",
    "length_tokens",
    "omega_h",
    "omega_l",
    "queries",
    "seconds",
    "vote_label",
    "sequential",
    "span_check",
}


def _cert(select: list[int], estimate: list[int]) -> Certificate:
    plan = VotePlan(
        text="a cf b",
        length_tokens=3,
        span_tokens=1,
        omega_h=0.9,
        omega_l=0.1,
        spans=[{"start": 2, "end": 4, "text": "cf", "score": 0.5, "tokens": [1, 2], "visits": 3}],
        fuzz_queries=5,
        select=[(0, "x")] * sum(select),
        estimate=[(0, "x")] * sum(estimate),
    )
    return finalize_certificate(plan, select, estimate, CertifyConfig(k=10), ["neg", "pos"])


def test_http_results_are_the_library_certificate():
    assert schemas.ClassifyResponse.model_fields["results"].annotation == list[Certificate]
    assert not hasattr(schemas, "CertificateModel") and not hasattr(schemas, "RadiusModel")
    assert client.Certificate is Certificate  # what FRSClient.classify returns
    assert set(Certificate.model_fields) == FIELDS and "label" not in FIELDS and "prediction" not in FIELDS


def test_http_answer_json_round_trips_a_library_certificate():
    cert = _cert([0, 10], [0, 20])
    resp = schemas.ClassifyResponse(request_id="r", results=[cert], timings={"total": 0.1})
    body = json.loads(resp.model_dump_json())
    assert body["results"][0] == json.loads(json.dumps(cert.to_dict()))  # what `frs certify` writes for it
    assert set(body["results"][0]) == FIELDS and set(body["results"][0]["radius"]) == {"conditional", "unconditional", "assumes"}
    assert body["results"][0]["radius"]["assumes"] == ASSUMPTIONS["both"]
    back = schemas.ClassifyResponse.model_validate(body).results[0]
    assert isinstance(back, Certificate) and back == cert
    assert (back.certified_label, back.vote_label, back.label_name) == (1, 1, "pos")


def test_certified_label_abstains_where_vote_label_does_not():
    c = _cert([3, 7], [4, 6])  # 13 of 20 votes: a majority, no certificate
    assert (c.certified_label, c.label_name, c.abstained, c.vote_label) == (ABSTAIN, "ABSTAIN", True, 1)
    assert c.radius["conditional"] is c.radius.conditional and c.radius.conditional.tokens is None
    with pytest.raises(KeyError):
        c.radius["assumes"]


def test_openapi_schema_describes_the_certificate_fields():
    spec = schemas.ClassifyResponse.model_json_schema()
    defs = spec["$defs"]
    assert spec["properties"]["results"]["items"] == {"$ref": "#/$defs/Certificate"}
    assert set(defs["Certificate"]["properties"]) == FIELDS
    assert "-1 (ABSTAIN)" in defs["Certificate"]["properties"]["certified_label"]["description"]
    assert "majority vote" in defs["Certificate"]["properties"]["vote_label"]["description"]
    assert set(defs["Radii"]["properties"]) == {"conditional", "unconditional", "assumes"}
    assert set(defs["Radius"]["properties"]) == set(Radius.model_fields) == {"tokens", "fraction", "omega", "assumes"}
    assert set(defs["VulnerableSpan"]["properties"]) == {"start", "end", "text", "score", "tokens", "visits"}
    assert Radii.model_fields["assumes"].default == ASSUMPTIONS["both"]


def test_service_openapi_answers_classify_with_the_certificate():
    from frs_ray.serving.router import app

    spec = app.openapi()
    ok = spec["paths"]["/v1/classify"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/ClassifyResponse"}
    comps = spec["components"]["schemas"]
    assert comps["ClassifyResponse"]["properties"]["results"]["items"] == {"$ref": "#/components/schemas/Certificate"}
    assert set(comps["Certificate"]["properties"]) == FIELDS
    assert "CertificateModel" not in comps and "RadiusModel" not in comps
