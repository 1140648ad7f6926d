"""The `frs` command on the real packaged MiniLM: fine-tune, certify, fuzz, and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from frs_ray.cli import main

REQUIRED = ("certified_label", "vote_label", "label_name", "votes", "p_lower", "abstained", "spans")


def _certify(ckpt: Path, tmp_path: Path, lines: list[str] | bytes, *extra: str, capsys=None) -> tuple[int, list[dict]]:
    inp = tmp_path / "in.txt"
    if isinstance(lines, bytes):
        inp.write_bytes(lines)
    else:
        inp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    rc = main(
        [
            "certify",
            "--checkpoint",
            str(ckpt),
            "--input",
            str(inp),
            "--out",
            str(out),
            "--no-progress",
            "--k",
            "4",
            "--budget",
            "3",
            *extra,
        ]
    )
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return rc, records


def test_finetune_writes_checkpoint_with_settings(minilm_checkpoint):
    meta = json.loads((minilm_checkpoint / "frs.json").read_text())
    assert meta["config"]["seed"] == 3 and meta["config"]["max_train_examples"] == 192
    assert meta["data"]["examples"] == 192 and len(meta["data"]["sha256"]) == 64
    assert meta["data"]["label_names"] == ["negative", "positive"]
    assert meta["smoothing"]["top_h"] == 6  # H=10 clamped to MiniLM's 6 layers
    assert any(n.startswith("classifier") for n in meta["smoothing"]["names"])
    assert not any("embeddings" in n for n in meta["smoothing"]["names"])
    assert list(minilm_checkpoint.glob("*.safetensors")) and (minilm_checkpoint / "tokenizer.json").exists()


# Sentiment-laden and neutral texts. With 8 selection and 40 estimation votes (VOTES) some certify and some abstain
# on the session checkpoint; at the default K = 4 votes every certificate abstains (0.05**(1/4) = 0.47 < 0.5) and the
# certified label and radius paths would never be checked. Which texts certify depends on the voters' noise, so the
# tests require both outcomes among them rather than naming the texts.
POOL = [
    "awful , boring , stupid and ugly .",
    "a gorgeous , witty , seductive movie .",
    "it runs 90 minutes .",
    "the film is strictly routine and dull .",
    "an utterly charming film .",
    "a tedious , plodding mess .",
    "a fine film .",
    "bad acting .",
    "it is a film .",
    "the movie has actors .",
    "the plot .",
    "a masterpiece : brilliant , moving and beautiful .",
    "it 's a mn charming and often affecting journey .",
    "the actors .",
    "there is a movie .",
    "a film about people .",
]
VOTES = ("--n-select", "8", "--n-estimate", "40")


def test_certify_outputs_certificate_fields(minilm_checkpoint, tmp_path):
    from frs_ray.certify.bounds import clopper_pearson_lower

    rc, recs = _certify(minilm_checkpoint, tmp_path, POOL, *VOTES)
    assert rc == 0 and len(recs) == len(POOL)
    assert {r["abstained"] for r in recs} == {False, True}, [r["p_lower"] for r in recs]  # both paths occur
    for r, t in zip(recs, POOL):
        assert r["text"] == t
        for key in REQUIRED:
            assert key in r
        assert "label" not in r and "prediction" not in r
        assert r["vote_label"] in (-1, 0, 1)  # the majority of all 48 votes (-1 on a tie)
        assert sum(r["votes"]) == 40 and sum(r["select_votes"]) == 8 and r["queries"]["fuzz"] == 3
        top = max(range(len(r["select_votes"])), key=lambda c: (r["select_votes"][c], -c))  # the selected class
        assert r["p_lower"] == pytest.approx(clopper_pearson_lower(r["votes"][top], 40, 0.05))
        assert r["abstained"] == (r["p_lower"] <= 0.5)
        for kind in ("conditional", "unconditional"):
            rad = r["radius"][kind]
            assert set(rad) >= {"tokens", "fraction", "omega", "assumes"}
            if r["abstained"]:
                assert r["certified_label"] == -1 and r["label_name"] == "ABSTAIN" and rad["tokens"] is None
            else:
                assert r["certified_label"] == top and r["label_name"] in ("negative", "positive")
                assert isinstance(rad["tokens"], int) and rad["tokens"] >= 0
                assert rad["fraction"] == pytest.approx(rad["tokens"] / r["length_tokens"])
        for sp in r["spans"]:
            assert t[sp["start"] : sp["end"]] == sp["text"]


def test_certify_is_reproducible_and_order_independent(minilm_checkpoint, tmp_path):
    _, r1 = _certify(minilm_checkpoint, tmp_path, POOL, *VOTES, "--k", "8", "--seed", "5")
    _, r2 = _certify(minilm_checkpoint, tmp_path, POOL[::-1], *VOTES, "--k", "8", "--seed", "5")
    assert {r["abstained"] for r in r1} == {False, True}  # certified labels and radii are compared, not only ABSTAIN

    def strip(r):
        return {k: v for k, v in r.items() if k not in ("index", "seconds")}

    assert [strip(r) for r in r1] == [strip(r) for r in r2[::-1]]


def test_certify_reports_bad_lines_and_keeps_the_rest(minilm_checkpoint, tmp_path, capsys):
    long = "word " * 400
    rc, recs = _certify(minilm_checkpoint, tmp_path, ["a fine film .", "", "   ", long, "bad acting ."])
    assert rc == 1
    assert [("error" in r) for r in recs] == [False, True, True, True, False]
    assert "empty" in recs[1]["error"] and "whitespace" in recs[2]["error"]
    assert "at most 128" in recs[3]["error"]
    err = capsys.readouterr().err
    assert "line 2" in err and "Traceback" not in err


def test_fuzz_command(minilm_checkpoint, capsys):
    rc = main(
        [
            "fuzz",
            "--checkpoint",
            str(minilm_checkpoint),
            "--text",
            "it 's a mn charming and often affecting journey .",
            "--budget",
            "5",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["queries"] == 5 and out["spans"]
    assert all(out["text"][s["start"] : s["end"]] == s["text"] for s in out["spans"])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--k", "0"], "k"),
        (["--k", "-3"], "k"),
        (["--budget", "-1"], "budget"),
        (["--omega-m", "1.5"], "omega_m"),
        (["--omega-h", "-0.1"], "omega_h"),
        (["--max-distance", "2"], "max_distance"),
        (["--max-distance", "-0.5"], "max_distance"),
        (["--alpha", "0"], "alpha"),
    ],
)
def test_bad_settings_are_clear_errors(minilm_checkpoint, tmp_path, capsys, argv, needle):
    inp = tmp_path / "in.txt"
    inp.write_text("fine\n")
    rc = main(["certify", "--checkpoint", str(minilm_checkpoint), "--input", str(inp), "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and needle in err


def test_span_rate_flag_reaches_the_randomization():
    from frs_ray.cli import _certify_config, build_parser

    base = ["certify", "--checkpoint", "c", "--input", "-"]
    assert _certify_config(build_parser().parse_args(base)).randomize.span_rate == "equal_mass"
    assert _certify_config(build_parser().parse_args([*base, "--span-rate", "fixed"])).randomize.span_rate == "fixed"


def test_bad_span_rate_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["certify", "--checkpoint", "c", "--input", "-", "--span-rate", "loose"])
    assert e.value.code == 2 and "span-rate" in capsys.readouterr().err


def test_unknown_config_field(minilm_checkpoint, tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"k": 5, "fuzzing": {"budgett": 3}}))
    inp = tmp_path / "in.txt"
    inp.write_text("fine\n")
    rc = main(["certify", "--checkpoint", str(minilm_checkpoint), "--input", str(inp), "--config", str(cfg)])
    err = capsys.readouterr().err
    assert rc == 2 and "fuzzing.budgett" in err and "unknown field" in err


def test_invalid_utf8_input_names_line(minilm_checkpoint, tmp_path, capsys):
    rc, _ = _certify(minilm_checkpoint, tmp_path, b"good text\nbad \xff\xfe bytes\n")
    err = capsys.readouterr().err
    assert rc == 2 and "in.txt:2" in err and "UTF-8" in err


def test_missing_checkpoint_and_data(tmp_path, capsys):
    assert main(["fuzz", "--checkpoint", str(tmp_path / "nope"), "--text", "x"]) == 2
    assert "not an FRS checkpoint" in capsys.readouterr().err
    assert main(["finetune", "--data", "no_such_set", "--out", str(tmp_path / "o")]) == 2
    assert "no_such_set" in capsys.readouterr().err


def test_no_traceback_from_the_console_script(tmp_path):
    """A user mistake through the installed entry point: exit 2, one line, no Python traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "frs_ray.cli", "certify", "--checkpoint", str(tmp_path), "--input", "-", "--k", "0"],
        input=b"hello\n",
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert b"Traceback" not in proc.stderr and b"error:" in proc.stderr


def test_certify_sequential_flags(minilm_checkpoint, tmp_path):
    """--n-max / --target-radius: estimation votes in rounds; the certificate records what they cost."""
    texts = ["a gorgeous , witty , seductive movie .", "the film is strictly routine and dull ."]
    # K=4 voters, 20 selection votes, first round 20 estimation votes, looks at 20 / 40 / 80 (alpha 0.05 / 3 each)
    rc, recs = _certify(
        minilm_checkpoint, tmp_path, texts, "--n-select", "20", "--n-estimate", "20", "--n-max", "80", "--target-radius", "1"
    )
    assert rc == 0 and len(recs) == 2
    for r in recs:
        s = r["sequential"]
        assert s["looks"] in (1, 2, 3) and s["votes"] == (20, 40, 80)[s["looks"] - 1] == sum(r["votes"])
        assert r["queries"]["votes"] == 20 + s["votes"] and sum(r["select_votes"]) == 20
        assert s["alpha_look"] == pytest.approx(0.05 / 3) and s["alpha_spent"] == pytest.approx(s["looks"] * 0.05 / 3)
        assert s["n_max"] == 80 and s["stop"] in ("target", "futile", "n_max") and s["target_kind"] == "conditional"
        assert r["abstained"] == (not r["p_lower"] > 0.5)
        if s["target_reached"]:
            assert r["radius"]["conditional"]["tokens"] >= s["target_radius"]
    # reproducible: the same texts in the other order give the same certificates
    _, again = _certify(
        minilm_checkpoint,
        tmp_path,
        texts[::-1],
        "--n-select",
        "20",
        "--n-estimate",
        "20",
        "--n-max",
        "80",
        "--target-radius",
        "1",
    )

    def strip(r):
        return {k: v for k, v in r.items() if k not in ("index", "seconds")}

    assert strip(recs[0]) == strip(again[1]) and strip(recs[1]) == strip(again[0])
    # without --n-max nothing changes: the fixed protocol, no sequential record
    _, fixed = _certify(minilm_checkpoint, tmp_path, texts[:1], "--n-select", "20", "--n-estimate", "20")
    assert fixed[0]["sequential"] is None and sum(fixed[0]["votes"]) == 20


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--target-radius", "1"], "needs n_max"),
        (["--n-max", "5"], "n_max"),
        (["--n-max", "80", "--target-radius", "-1"], "target_radius"),
        (["--n-max", "0"], "n_max"),
    ],
)
def test_bad_sequential_settings_are_clear_errors(minilm_checkpoint, tmp_path, capsys, argv, needle):
    inp = tmp_path / "in.txt"
    inp.write_text("fine\n")
    rc = main(["certify", "--checkpoint", str(minilm_checkpoint), "--input", str(inp), "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and needle in err
