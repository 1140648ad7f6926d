"""Compatibility shim: the library part of ``tune/sweep.py`` now lives in the package ``tune/study/``.

``import _study`` (with ``tune/`` on ``sys.path``, as ``tune/sweep.py`` and ``tests/test_tune_sweep.py`` do) gives
every public name of ``study`` under the old module name. New code should ``import study``.
"""

from study import (CSV_COLUMNS, INFERENCE_ONLY, MD_COLUMNS, OBJECTIVES, PAPER_DEFAULTS, REPO_ROOT, SEARCHED,
                   SERVE_TEMPLATE, StudySettings, centre_accuracy, ensure_finetuned, evaluate_point, file_lock,
                   finetune_key, fitting_subset, grid_points, is_range, load_triggered, machine_info, make_optuna,
                   markdown_table, model_depth, optuna_space, pareto_front, parse_list, plot_tradeoff, point_of,
                   prepare_eval_data, publish, rows_from_results, run_trial, select_best, trial_dirname,
                   validate_values, write_csv, write_markdown, write_outputs, write_serve_config)

__all__ = [
    "CSV_COLUMNS", "INFERENCE_ONLY", "MD_COLUMNS", "OBJECTIVES", "PAPER_DEFAULTS", "REPO_ROOT", "SEARCHED",
    "SERVE_TEMPLATE", "StudySettings", "centre_accuracy", "ensure_finetuned", "evaluate_point", "file_lock",
    "finetune_key", "fitting_subset", "grid_points", "is_range", "load_triggered", "machine_info", "make_optuna",
    "markdown_table", "model_depth", "optuna_space", "pareto_front", "parse_list", "plot_tradeoff", "point_of",
    "prepare_eval_data", "publish", "rows_from_results", "run_trial", "select_best", "trial_dirname",
    "validate_values", "write_csv", "write_markdown", "write_outputs", "write_serve_config",
]
