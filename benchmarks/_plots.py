"""The figure the study benchmarks share: one panel per attack, a metric in % against the studied setting.

Used by ``omega_study.py`` and ``noise_study.py`` (run as scripts, so this folder is on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

METRIC_COLOURS = (("ca", "tab:blue"), ("pa", "tab:green"), ("asr", "tab:red"))


def attack_panels(
    attacks: Sequence[str],
    path: Path,
    draw: Callable[[Any, str], str],
    xlabel: str,
    width: float = 4.4,
    legend: dict[str, Any] | None = None,
) -> None:
    """One panel per attack; ``draw(ax, attack)`` plots it and returns its title. Writes ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(attacks), figsize=(width * len(attacks), 3.4), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        ax.set(title=draw(ax, attack), xlabel=xlabel, ylabel="%", ylim=(0, 100))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(**(legend or {"fontsize": 8}))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
