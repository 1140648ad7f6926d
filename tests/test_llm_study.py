"""benchmarks/llm_study.py's ca-variants section: the clean-accuracy blocks of several reports as one table, the
last one given standing for the report, an earlier block of the report itself kept and labelled by its fine-tune."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("llm_study", ROOT / "benchmarks" / "llm_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ca(plain: float, centre: float, ensemble: float, n: int) -> dict:
    return {
        "n": n,
        "k": 20,
        "seed": 0,
        "ca_plain": plain,
        "ca_smoothed_centre": centre,
        "ca_smoothed": ensemble,
        "ensemble_ties": 0,
        "voter_ca": {"mean": ensemble, "min": ensemble, "max": ensemble},
        "unanimous_share": 50.0,
        "seconds": {"plain": 1.0, "smoothed": 2.0},
        "voter_pool": {},
    }


def test_ca_variants_merge_label_and_render(tmp_path):
    mod = _module()
    other = tmp_path / "variant.json"
    other.write_text(json.dumps({"ca": _ca(80.0, 79.0, 78.5, 1821)}))
    res = {
        "ca": _ca(62.82, 57.88, 53.82, 1821),
        "date": "2026-12-01 20:33 UTC",
        "finetune_commands": [
            'Command being timed: "python -m frs_ray.cli finetune --lora --no-smoothing --out p"',
            'Command being timed: "python -m frs_ray.cli finetune --lora --out s"',
        ],
    }
    args = argparse.Namespace(ca_reports=[f"{other}::head exact"], name="llm")
    variants = mod.read_ca_variants(args, res)
    assert [v["label"] for v in variants] == ["--lora --out s", "head exact"]
    assert variants[0]["report"] == "llm.json of 2026-12-01 20:33 UTC" and variants[1]["report"] == str(other)
    res["ca_variants"] = variants
    again = mod.read_ca_variants(args, res)  # idempotent: a report given again replaces its row
    assert [v["label"] for v in again] == ["--lora --out s", "head exact"]
    text = "\n".join(mod._ca_variant_lines(variants))
    assert "| head exact | 1821 | 80.00 | 79.00 | 78.50 | -1.50 |" in text
    assert "| -9.00 |" in text


def test_render_names_each_fine_tune_command_once():
    mod = _module()
    res = {
        "command": "python benchmarks/llm_study.py",
        "machine": "m",
        "date": "d",
        "finetune_commands": [
            'Command being timed: "/x/.venv/bin/python -m frs_ray.cli finetune --lora --no-smoothing --out p"',
            'Command being timed: "frs finetune --lora --new-head exact --out s"',
        ],
    }
    text = mod.render(res)
    assert "- fine-tune: `frs finetune --lora --no-smoothing --out p`" in text
    assert "- fine-tune: `frs finetune --lora --new-head exact --out s`" in text
    assert "Attacks on the decoder" not in text  # no eval section measured, none rendered
