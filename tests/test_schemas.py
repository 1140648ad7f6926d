"""The HTTP certificate is the library's certificate, field for field (no drift between the two)."""

from __future__ import annotations

import dataclasses

from frs_ray.certify.smooth import Certificate, Radius
from frs_ray.serving.schemas import CertificateModel, RadiusModel


def test_http_certificate_has_exactly_the_library_fields():
    assert set(CertificateModel.model_fields) == {f.name for f in dataclasses.fields(Certificate)}
    assert set(RadiusModel.model_fields) == {f.name for f in dataclasses.fields(Radius)}
