"""frs-fluency: FRS whose span is kept only where deleting it makes the text more fluent (real SmolLM2, real MiniLM)."""

from __future__ import annotations

import math

import pytest
from conftest import sst2_defense_context

from frs_ray.backends.lm import PerplexityLM, resolve_lm
from frs_ray.data import load_dataset
from frs_ray.defenses.registry import build_defense, known_defenses, needs_smoothed
from frs_ray.errors import ConfigError
from frs_ray.fuzzing import Span
from frs_ray.fuzzing.fluency import FluencySpanFilter, span_suspicion
from frs_ray.text import render, tokenize

SMALL = {"k": 4, "n_estimate": 12, "n_select": 4, "fuzzing": {"budget": 4}}


def _span(words: list[str], a: int, b: int) -> Span:
    return Span(a, b, 0, 0, " ".join(words[a:b]), 1.0, 1)


def _ctx(tmp_path, checkpoint, data_dir):
    return sst2_defense_context(tmp_path, checkpoint, data_dir, 20, smoothed_checkpoint=checkpoint)


def test_suspicion_formula_and_degenerate_perplexities():
    assert span_suspicion(math.e**3, math.e) == pytest.approx(2.0)
    assert span_suspicion(10.0, 20.0) < 0
    assert span_suspicion(math.inf, 5.0) == 0.0 and span_suspicion(5.0, 0.0) == 0.0


def test_registered_and_rejects_bad_parameters(tmp_path, data_dir):
    assert "frs-fluency" in known_defenses()
    smoothed = {d for d in known_defenses() if needs_smoothed(d)}  # what `frs eval` builds a BMPS victim for
    assert smoothed == {
        "frs",
        "frs-fluency",
        "frs-transplant",
        "frs-fluency-transplant",
        "uniform",
        "no-ftr",
        "no-bmps-ft",
        "no-bmps-inf",
    }
    ctx = _ctx(tmp_path, "unused", data_dir)
    with pytest.raises(ConfigError, match="treshold"):
        build_defense("frs-fluency", ctx, treshold=0.0)
    with pytest.raises(ConfigError, match="lm_batch_size"):
        build_defense("frs-fluency", ctx, lm_batch_size=0)


@pytest.fixture(scope="module")
def lm():
    return PerplexityLM(resolve_lm("smollm2"))


@pytest.mark.slow
def test_filter_keeps_a_rare_word_trigger_and_applies_the_threshold(lm):
    words = "a gripping and moving story about a family .".split()
    trig = words[:2] + ["cf"] + words[2:]
    batch = [(trig, [_span(trig, 2, 3)]), (trig, [_span(trig, 0, len(trig))])]
    f = FluencySpanFilter(lm, threshold=0.0)
    kept = f([(w, list(s)) for w, s in batch])
    assert kept[0] == batch[0][1]  # deleting "cf" makes the sentence more fluent
    assert kept[1] == batch[1][1]  # a span that is the whole text is kept
    p = lm.perplexities([render(trig), render(words)])
    assert f.checks[0].suspicion == pytest.approx(math.log(p[0]) - math.log(p[1]), abs=1e-4)
    assert f.checks[0].kept and f.checks[0].lm_queries == 2 and f.checks[1].lm_queries == 0
    strict = FluencySpanFilter(lm, threshold=f.checks[0].suspicion + 1e-3)
    assert strict([batch[0]]) == [[]] and not strict.checks[0].kept


@pytest.mark.slow
def test_without_a_kept_span_it_is_uniform_smoothing_and_with_all_kept_it_is_frs(tmp_path, data_dir, minilm_checkpoint):
    ctx = _ctx(tmp_path, minilm_checkpoint, data_dir)
    test = load_dataset("sst2", "test", data_dir)
    texts = [t for t in test.texts if 5 <= len(tokenize(t)) <= 14][:5]
    texts.append(texts[0].replace(" ", " cf ", 1))
    none_kept = build_defense("frs-fluency", ctx, threshold=1e9, **SMALL)
    all_kept = build_defense("frs-fluency", ctx, threshold=-1e9, **SMALL)
    uniform = build_defense("uniform", ctx, **SMALL)
    frs = build_defense("frs", ctx, **SMALL)
    a, b, u, f = (d.predict(texts) for d in (none_kept, all_kept, uniform, frs))
    for x, y in zip(a, u):  # the same voters and draws as uniform smoothing, plus FRS's fuzzing and 2 LM sequences
        assert (x.vote_label, x.certified_label, x.radius, x.radius_assumes) == (
            y.vote_label,
            y.certified_label,
            y.radius,
            y.radius_assumes,
        )
        assert x.spans == []
    for x, y, z in zip(b, f, texts):
        assert (x.vote_label, x.certified_label, x.radius, x.spans) == (y.vote_label, y.certified_label, y.radius, y.spans)
        assert x.queries == y.queries + 2 and x.seconds >= y.seconds
    assert none_kept.describe()["spans_kept"] == 0.0 and all_kept.describe()["spans_kept"] == 1.0
    assert none_kept.describe()["fluency"]["threshold"] == 1e9


def test_service_settings_take_the_span_check():
    from pydantic import ValidationError

    from frs_ray.serving.settings import ServiceSettings

    assert ServiceSettings(checkpoint="x").span_check_options() is None
    s = ServiceSettings(checkpoint="x", span_check="fluency", span_check_threshold=0.5)
    assert s.span_check_options() == {
        "kind": "fluency",
        "threshold": 0.5,
        "fluency_threshold": None,
        "lm": "smollm2",
        "data": None,
        "m": None,
        "grow": 0,
        "combine": "each",
        "length_strata": (),
    }
    with pytest.raises(ValidationError, match="span_check"):
        ServiceSettings(checkpoint="x", span_check="perplexity")


@pytest.mark.slow
def test_fuzz_worker_applies_the_span_check(minilm_checkpoint):
    """The service's fuzzing worker (the class Ray runs as an actor) with the fluency check: a dropped span leaves
    uniform randomization and no span in the plan; keeping every span gives FRS's plan."""
    from frs_ray.certify.smooth import FRSClassifier
    from frs_ray.config import CertifyConfig
    from frs_ray.serving.actors import FuzzWorker

    texts = ["a gorgeous , witty , seductive movie .", "the film is strictly cf routine and dull ."]
    cfg = CertifyConfig(k=4, seed=1, fuzzing={"budget": 3})
    plain = FRSClassifier.from_checkpoint(minilm_checkpoint, cfg).prepare(texts)
    none_kept = FuzzWorker(str(minilm_checkpoint), span_check={"kind": "fluency", "threshold": 1e9}).prepare(
        texts, cfg.model_dump()
    )
    all_kept = FuzzWorker(str(minilm_checkpoint), span_check={"kind": "fluency", "threshold": -1e9}).prepare(
        texts, cfg.model_dump()
    )
    for p, n, a in zip(plain, none_kept, all_kept):
        assert n.spans == [] and n.span_tokens == 0 and n.omega_h == n.omega_l == cfg.randomize.omega_m
        assert a.spans == p.spans[: cfg.fuzzing.num_spans] and (a.omega_h, a.omega_l) == (p.omega_h, p.omega_l)
        assert a.select == p.select and a.estimate == p.estimate
