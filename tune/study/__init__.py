"""Library part of ``tune/sweep.py``: study settings, the Tune trial, the fine-tune cache and the outputs.

A *point* is one setting of the searched hyperparameters: ``K``, ``sigma``, ``H``, ``budget``, ``omega_h``,
``omega_m`` and ``max_distance`` (Lambda). ``sigma`` and ``H`` change the fine-tuning (Eq. 4); the others change
only inference, so every point with the same (sigma, H) reuses one fine-tuned checkpoint.

Modules: ``settings`` (StudySettings, searched values, grid points), ``data`` (evaluation subsets, triggered
test set), ``finetune_cache`` (the per-(sigma, H) checkpoints, epoch-wise training for ASHA; its docstring
describes the cache), ``trial`` (the Tune trainable ``run_trial``, the Optuna search), ``pareto`` (Pareto front,
selection of the best configuration), ``report`` (results.md), ``outputs`` (the other study files), ``folder``
(opening a new or resumed study folder, the record in study.json), ``tuner`` (the Ray instance and the Tuner that
runs the trials) and ``summary`` (the closing lines and exit status of a run).
Every public name is re-exported here; ``tune/_study.py`` re-exports them under the name ``_study``.
"""

from .data import fitting_subset, load_triggered, model_depth, prepare_eval_data
from .finetune_cache import centre_accuracy, ensure_finetuned, file_lock, finetune_key
from .folder import default_folder, finish_run_record, new_study, now_stamp, resume_study, study_record
from .outputs import (
    CSV_COLUMNS,
    REPO_ROOT,
    SERVE_TEMPLATE,
    machine_info,
    plot_tradeoff,
    publish,
    rows_from_results,
    write_csv,
    write_outputs,
    write_serve_config,
)
from .pareto import pareto_front, select_best
from .report import MD_COLUMNS, markdown_table, write_markdown
from .settings import (
    INFERENCE_ONLY,
    OBJECTIVES,
    PAPER_DEFAULTS,
    SEARCHED,
    StudySettings,
    grid_points,
    is_range,
    parse_list,
    validate_values,
)
from .summary import exit_status, log_summary
from .trial import evaluate_point, make_optuna, optuna_space, point_metrics, point_of, run_trial, trial_dirname
from .tuner import prepare_environment, run_trials, trial_count

__all__ = [
    "CSV_COLUMNS",
    "INFERENCE_ONLY",
    "MD_COLUMNS",
    "OBJECTIVES",
    "PAPER_DEFAULTS",
    "REPO_ROOT",
    "SEARCHED",
    "SERVE_TEMPLATE",
    "StudySettings",
    "centre_accuracy",
    "default_folder",
    "ensure_finetuned",
    "evaluate_point",
    "exit_status",
    "file_lock",
    "finetune_key",
    "finish_run_record",
    "fitting_subset",
    "grid_points",
    "is_range",
    "load_triggered",
    "log_summary",
    "machine_info",
    "make_optuna",
    "markdown_table",
    "model_depth",
    "new_study",
    "now_stamp",
    "optuna_space",
    "pareto_front",
    "parse_list",
    "plot_tradeoff",
    "point_metrics",
    "point_of",
    "prepare_environment",
    "prepare_eval_data",
    "publish",
    "resume_study",
    "rows_from_results",
    "run_trial",
    "run_trials",
    "select_best",
    "study_record",
    "trial_count",
    "trial_dirname",
    "validate_values",
    "write_csv",
    "write_markdown",
    "write_outputs",
    "write_serve_config",
]
