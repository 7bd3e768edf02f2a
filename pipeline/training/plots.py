"""Training curves as a PNG: people would rather see a loss curve than read a log."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_history(history: list[dict[str, Any]], path: str | Path, metric: str = "wer",
                 model_step: int | None = None) -> Path | None:
    """Training loss and the evaluations' `metric` by step; a dashed line at `model_step` when the saved model
    is an earlier step's (`train.final_model=best`)."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h[f"eval_{metric}"]) for h in history if f"eval_{metric}" in h]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot(*zip(*train, strict=True), color="tab:blue", label="training loss")
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (per target token)", color="tab:blue")
    if evals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*evals, strict=True), "o-", color="tab:red", label=f"eval {metric.upper()}")
        ax2.set_ylabel(f"eval {metric.upper()}", color="tab:red")
        ax2.set_ylim(bottom=0)
    if model_step is not None:
        ax.axvline(model_step, color="tab:green", linestyle="--", label=f"saved model (step {model_step})")
        ax.legend(loc="lower left")
    ax.set_title("Training curves")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
