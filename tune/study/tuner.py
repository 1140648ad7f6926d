"""Running a study's trials with Ray Tune: the process environment, the local Ray instance, the Tuner (grid or
Optuna search, ASHA or FIFO scheduling, restored when resuming) and the rows of its results."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from .outputs import rows_from_results
from .settings import StudySettings
from .trial import make_optuna, optuna_space, run_trial, trial_dirname


def prepare_environment() -> None:
    """Set the Ray variables of the project and the two Tune settings a study relies on."""
    from frs_ray.runtime import configure_process

    configure_process(quiet=False, ray=True)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every trial's progress line, not "[repeated 2x]"
    # Fine-tune reports carry only the ASHA metric (dev_acc), the final report only the search metrics (ca, asr,
    # radius): each consumer ignores results without its metric, but Tune's strict check would reject them.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"


def trial_count(s: StudySettings, points: list | None) -> tuple[int, int]:
    """(trials, most fine-tunes) of a study: one fine-tune per distinct (sigma, H)."""
    n_ft = len({(p["sigma"], p["H"]) for p in points}) if points else len(s.values["sigma"]) * len(s.values["H"])
    return (len(points) if points else s.num_samples), n_ft


def _scheduler(s: StudySettings):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if s.epochs > 1 and s.asha:
        return ASHAScheduler(
            time_attr="epoch",
            metric="dev_acc",
            mode="max",
            max_t=s.epochs,
            grace_period=min(s.grace_period, s.epochs),
            reduction_factor=s.reduction_factor,
            stop_last_trials=False,
        )
    return FIFOScheduler()


def _tuner(s: StudySettings, data: dict[str, Any], points: list | None, out: Path, resume: bool, log: Callable[[str], None]):
    """A Tuner for the study's trials: restored from ``out/tuner`` when resuming and restorable, else new."""
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(run_trial, settings=s.to_dict(), data=data), {"cpu": s.cpus_per_trial})
    exp_dir = out / "tuner"
    if resume and tune.Tuner.can_restore(str(exp_dir)):
        return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, restart_errored=True)
    if resume:
        log("no restorable Tune experiment in the study folder: starting its trials (cached fine-tunes are reused)")
    if s.mode == "grid":
        param_space, search_alg, num_samples = {"point": tune.grid_search(points)}, None, 1
    else:
        param_space, search_alg, num_samples = optuna_space(s.values), make_optuna(s.seed), s.num_samples
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=_scheduler(s),
            num_samples=num_samples,
            trial_dirname_creator=trial_dirname,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="tuner", storage_path=str(out), verbose=1, failure_config=tune.FailureConfig(max_failures=0)
        ),
    )


def run_trials(
    s: StudySettings,
    data: dict[str, Any],
    points: list | None,
    out: Path,
    *,
    resume: bool,
    address: str | None,
    num_cpus: int | None,
    pythonpath: Sequence[Path],
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Run the study's trials on a Ray instance (``address``, else a private local one of ``num_cpus`` CPUs).

    ``pythonpath`` is put first on the workers' ``PYTHONPATH`` so they import ``study``. Returns the result rows
    and the trial counts of :func:`~.outputs.rows_from_results`, plus ``unfinished``: trials neither terminated
    nor errored, cut off by an interruption (Ctrl-C) and resumable.
    """
    import ray

    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(p) for p in pythonpath] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]
    )
    init_kw = (
        {"address": address}
        if address
        else {
            "address": "local",
            "num_cpus": num_cpus or os.cpu_count(),
            "include_dashboard": False,
            "object_store_memory": 512 * 1024 * 1024,
        }
    )
    ray.init(log_to_driver=True, logging_level="WARNING", **init_kw)
    try:
        grid = _tuner(s, data, points, out, resume, log).fit()
        rows, counts = rows_from_results(grid)
        unfinished = len(grid) - grid.num_terminated - grid.num_errors
        counts["unfinished"] = unfinished
        counts["stopped_early"] -= unfinished
        for res in grid:
            if res.error is not None:
                log(f"trial error: {str(res.error).splitlines()[0][:300]}")
    finally:
        ray.shutdown()
    return rows, counts
