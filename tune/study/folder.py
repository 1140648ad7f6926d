"""The study folder and its record, study.json: opening a new or resumed study, and what a run writes there.

A study folder holds ``study.json`` (settings, data checksums, one entry per run of ``tune/sweep.py``), the Tune
experiment ``tuner/`` and, by default, the fine-tune cache ``finetune/``. A folder with a ``tuner/`` is an existing
study: it is continued only with ``resume`` (with its saved settings) or rerun with ``fresh`` (the cache is kept).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from frs_ray.data import TextDataset
from frs_ray.errors import ConfigError

from .outputs import machine_info
from .settings import StudySettings

_EXISTS = (
    "a study already exists in {}: pass --resume to continue it, or --fresh to rerun all its trials "
    "(cached fine-tunes are reused), or choose another --out"
)


def now_stamp() -> str:
    """Local wall-clock time as recorded in study.json (``%Y-%m-%dT%H:%M:%S%z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def default_folder(out: str | None, name: str | None) -> Path | None:
    """``out`` resolved, else ``runs/tune/<name>``; ``None`` when neither is known yet (the name needs the model)."""
    if out:
        return Path(out).expanduser().resolve()
    if name:
        return (Path("runs/tune") / name).resolve()
    return None


def _previous_runs(study_file: Path) -> list:
    return json.loads(study_file.read_text()).get("runs", []) if study_file.is_file() else []


def resume_study(out: Path | None, log: Callable[[str], None]) -> tuple[StudySettings, list]:
    """Settings and earlier runs of the study in ``out``; refused when its voters differ from this code's."""
    from frs_ray.smoothing.bmps import VOTER_DEFINITION

    study_file = out / "study.json" if out else None
    if out is None or not study_file.is_file():
        raise ConfigError(f"--resume: no study to resume at {out} (no study.json); pass --out of an existing study")
    prev = json.loads(study_file.read_text())
    if prev.get("voter_definition") != VOTER_DEFINITION:  # its finished trials voted with other voters
        raise ConfigError(
            f"--resume: the study in {out} was run with voter definition "
            f"{prev.get('voter_definition', 'v1')!r}, this code defines {VOTER_DEFINITION!r}; "
            "rerun it with --fresh (cached fine-tunes are reused)"
        )
    s = StudySettings.from_dict(prev["settings"])
    history = prev.get("runs", [])
    s.run_id = len(history) + 1
    log(f"resuming study {s.name} in {out} (run {s.run_id}); its saved settings are used, search flags are ignored")
    return s, history


def new_study(
    out: Path | None, fresh: bool, cache: str | None, settings_for: Callable[[Path], StudySettings]
) -> tuple[StudySettings, list]:
    """Settings of a new (or ``fresh``) study and the runs already recorded in its folder.

    ``settings_for(folder)`` builds the settings; with ``out`` of ``None`` the folder is ``runs/tune/<name>``, the
    name being known only once the settings are. An existing study is refused before any data is loaded, unless
    ``fresh``, which removes its Tune experiment.
    """
    if out is not None and (out / "tuner").exists() and not fresh:
        raise ConfigError(_EXISTS.format(out))
    if out is None:
        s = settings_for(Path("."))
        out = (Path("runs/tune") / s.name).resolve()
        s.out = str(out)
        s.cache_dir = str(Path(cache).resolve()) if cache else str(out / "finetune")
    else:
        s = settings_for(out)
    if (out / "tuner").exists():
        if not fresh:
            raise ConfigError(_EXISTS.format(out))
        shutil.rmtree(out / "tuner")
    history = _previous_runs(out / "study.json")
    s.run_id = len(history) + 1
    return s, history


def study_record(
    s: StudySettings, data: dict[str, Any], train: TextDataset, points: list | None, history: list, run_rec: dict[str, Any]
) -> dict[str, Any]:
    """The contents of study.json at the start of a run (this run's entry has status ``running``)."""
    from frs_ray.smoothing.bmps import VOTER_DEFINITION

    return {
        "name": s.name,
        "settings": s.to_dict(),
        "voter_definition": VOTER_DEFINITION,
        "points": points,
        "machine": machine_info(),
        "train": {"source": train.source, "sha256": train.sha256, "rows": len(train), "subset": s.train_n, "subset_seed": s.seed},
        "evaluation": {
            "clean": {"source": data["clean"]["source"], "sha256": data["clean"]["sha256"], "n": len(data["clean"]["texts"])},
            "dev": {"source": data["dev"]["source"], "sha256": data["dev"]["sha256"], "n": len(data["dev"]["texts"])},
            "triggered": {
                "source": data["triggered"]["source"],
                "sha256": data["triggered"]["sha256"],
                "n": len(data["triggered"]["texts"]),
                "labels_mode": data["triggered"]["labels_mode"],
            },
        },
        "runs": history + [{**run_rec, "status": "running"}],
    }


def finish_run_record(
    run_rec: dict[str, Any], rows: list[dict[str, Any]], counts: dict[str, int], run_id: int, started: float
) -> None:
    """Complete this run's entry: status, finish time, wall seconds since ``started`` (``perf_counter``), trials,
    epochs trained and fine-tunes reused by this run's rows."""
    this_run = [r for r in rows if r.get("run_id") == run_id]
    run_rec.update(
        {
            "status": "interrupted" if counts["unfinished"] else "done",
            "finished": now_stamp(),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "trials_run": len(this_run),
            "epochs_trained": sum(int(r.get("epochs_trained") or 0) for r in this_run),
            "finetunes_reused": sum(bool(r.get("finetune_reused")) for r in this_run),
        }
    )
