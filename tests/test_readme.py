"""README.md names only things that exist: ``frs`` subcommands, ``make`` targets, ``python`` scripts, files and
folders of the repository (configs included) and config fields (``SomethingConfig.field``).

What counts as named: the text of inline code spans and fenced code blocks. A path is looked up from the repository
root and from the folders the README abbreviates (``frs_ray/``, ``docs/results/``, ``tune/``, and the folders of its
file tree: ``benchmarks/``, ``deployments/``, ``configs/eval/``); outputs that commands write (``runs/...``, and the
few names in GENERATED) and datasets of the data folder are not repository files.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BASES = ("", "frs_ray", "docs/results", "tune", "benchmarks", "deployments", "configs/eval")
EXTENSIONS = ("py", "yaml", "yml", "md", "json", "jsonl", "txt", "sh", "csv", "tsv", "png", "toml", "cfg")
# Names of files and folders that commands or set-up create (they are not in the repository), with what makes them.
GENERATED = {
    ".venv": "make setup",
    "frs.json": "every checkpoint folder (frs finetune)",
    "attack.json": "every poisoned checkpoint (frs attack)",
    "texts.txt": "the user's input in the frs certify example",
    "certs.jsonl": "frs certify --out",
}
# Code that looks like a path but is none.
NOT_PATHS = {"application/json": "an HTTP content type (curl -H)", "/v1/classify": "the service's HTTP route"}

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`([^`\n]+)`")
_FRS = re.compile(r"(?<![\w./-])frs ([a-z][a-z-]*)")
_MAKE = re.compile(r"(?<![\w./-])make ([a-z][\w-]*)")
_PYTHON = re.compile(r"(?<![\w-])python3? ((?:[\w.-]+/)*[\w.-]+\.py)\b")
_CONFIG_FIELD = re.compile(r"\b([A-Z]\w*Config)\.(\w+)")
_TOKEN = re.compile(r"[^\s,;()\[\]'\"=|]+")


def code_texts(markdown: str) -> list[str]:
    """The text of every fenced code block and of every inline code span outside them."""
    blocks = _FENCE.findall(markdown)
    rest = _FENCE.sub("", markdown)
    return blocks + _INLINE.findall(rest)


def _frs_subcommands() -> set[str]:
    from frs_ray.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def _make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", (REPO / "Makefile").read_text(), re.M))


def _path_candidates(text: str) -> list[str]:
    out = []
    for tok in _TOKEN.findall(text):
        tok = tok.rstrip(".:`")
        if not tok or any(c in tok for c in "<>{}$*") or "://" in tok or tok.startswith(("hf:", "-", "runs/", "../")):
            continue
        if re.fullmatch(r"\.\w+", tok) or tok in NOT_PATHS:  # a bare extension (`.tsv`)
            continue
        if not all(re.search(r"[A-Za-z]", part) for part in tok.strip("/").split("/")):  # "Tables 2/5"
            continue
        ext_ok = re.search(r"\.(" + "|".join(EXTENSIONS) + r")$", tok)
        if "/" in tok or ext_ok or tok in GENERATED:
            out.append(tok)
    return out


def _exists(name: str, data_dir: Path | None) -> bool:
    if name.rstrip("/").split("/")[0] in GENERATED:  # .venv/bin/activate
        return True
    if any((REPO / base / name).exists() for base in BASES):
        return True
    return data_dir is not None and (data_dir / name).is_dir()  # a dataset name such as poisoned/badnets/sst2


def missing_names(markdown: str, data_dir: Path | None) -> list[str]:
    """What ``markdown`` names that does not exist, one line each (empty when everything exists)."""
    import frs_ray.config as config

    subcommands, targets = _frs_subcommands(), _make_targets()
    missing = []
    for text in code_texts(markdown):
        missing += [f"command: frs {s}" for s in _FRS.findall(text) if s not in subcommands]
        missing += [f"make target: make {t}" for t in _MAKE.findall(text) if t not in targets]
        missing += [f"script: python {f}" for f in _PYTHON.findall(text) if not (REPO / f).is_file()]
        for cls, field in _CONFIG_FIELD.findall(text):
            model = getattr(config, cls, None)
            if model is None or field not in getattr(model, "model_fields", {}):
                missing.append(f"config field: {cls}.{field}")
        missing += [f"path: {p}" for p in _path_candidates(text) if not _exists(p, data_dir)]
    return sorted(set(missing))


def test_readme_names_only_existing_commands_files_and_configs():
    from frs_ray.data import default_data_dir

    assert missing_names(README.read_text(encoding="utf-8"), default_data_dir()) == []


def test_the_check_finds_what_does_not_exist():
    text = """
```bash
frs certify --checkpoint runs/x --input texts.txt
frs certfy --checkpoint runs/x
make tests
python tune/sweeep.py --quick
frs eval --config configs/eval/sst3.yaml
```
See `deployments/frs.yaml`, `docs/results/nosuch.md`, `SmoothingConfig.data_noise` and `SmoothingConfig.sigmaa`.
"""
    assert missing_names(text, None) == [
        "command: frs certfy",
        "config field: SmoothingConfig.sigmaa",
        "make target: make tests",
        "path: configs/eval/sst3.yaml",
        "path: docs/results/nosuch.md",
        "path: tune/sweeep.py",
        "script: python tune/sweeep.py",
    ]


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_names_are_not_repository_files(name):
    # a name the repository does contain (a tracked file or folder) must be checked as a file, not excused as
    # generated; what set-up or commands wrote into this checkout (.venv, runs/) is not the repository
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    prefixes = {f"{base}/{name}".lstrip("/") for base in BASES}
    assert not any(t == p or t.startswith(p + "/") for t in tracked for p in prefixes)
