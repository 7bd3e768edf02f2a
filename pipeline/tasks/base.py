"""What a task hands the shared training loop.

The loop (pipeline.training.loop) owns devices, precision, accumulation, logging, checkpoints and
resume. A task owns everything specific to a model: data preparation, batch collation, the loss,
metrics and what a finished model directory holds. ASR, self-supervised pretraining, vocoders
and acoustic models all plug in here.

Optional hooks the loop calls when a task defines them:
- `on_step_start(model, step)`: before each optimizer step (0-based; the unwrapped model), e.g. a
  schedule that must follow the step and survive resume (the Gumbel temperature of task ssl).
- `step_metrics() -> dict[str, float]`: the task's own training metrics since the last call,
  merged into each training-log record (averaged over processes: return the same keys on each).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator

from pipeline.machine import describe as describe_machine


class Task(Protocol):
    name: str
    main_metric: str  # e.g. "wer"; lower is better

    def setup(self, accelerator: Accelerator) -> None:
        """Load data and build the model (every process)."""

    @property
    def model(self) -> torch.nn.Module: ...

    def train_durations(self) -> list[float]:
        """Duration (seconds) of each training example, for duration batching."""

    def train_example(self, index: int) -> dict[str, Any]:
        """One training example (a table row); the DataLoader reads these."""

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        """A model-ready batch from rows (None for an empty list)."""

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss, number of units it is summed over), so the loop can normalise globally."""

    def evaluate(self, accelerator: Accelerator, model: torch.nn.Module, limit: int | None = None) -> dict[str, Any]:
        """Metrics on the evaluation split (every process takes part; the main one gets the result)."""

    def save(self, model: torch.nn.Module, output_dir: Path, metrics: dict[str, Any]) -> None:
        """Write a finished, self-contained model directory (main process only)."""


class ModelHolder:
    """The accessors every task shares: set `self._model` and `self._durations` in `setup()`."""

    _model: torch.nn.Module | None = None
    _durations: list[float]

    @property
    def model(self) -> torch.nn.Module:
        assert self._model is not None, "call setup() first"
        return self._model

    def train_durations(self) -> list[float]:
        return self._durations


def metric_text(metrics: dict[str, Any], key: str, digits: int = 3) -> str:
    """A metric for a model card: the number, or "-" when the run has none."""
    v = metrics.get(key)
    return f"{v:.{digits}f}" if isinstance(v, float) else "-"


def render_model_card(recipe: Any, front_matter: list[str], body: list[str], metrics: dict[str, Any],
               usage: list[str] | None = None) -> str:
    """The README.md every task writes next to its model: front matter, title, the task's own body
    (description, data, results), then the same training line, usage and recipe sections for all."""
    from pipeline.config import dump_recipe

    lines = ["---", *front_matter, "---", "", f"# {Path(recipe.output_dir).name}", "", *body,
             f"Training: {metrics.get('steps')} steps, {metrics.get('train_minutes')} minutes, "
             f"stopped by {metrics.get('stop_reason')}.", ""]
    if metrics.get("model_step") not in (None, metrics.get("steps")):
        lines[-1:] = [f"These are the weights of step {metrics['model_step']}, the best evaluation "
                      f"(`train.final_model=best`).", ""]
    if metrics.get("machine"):  # a budget in minutes buys what the machine can do
        lines += [f"Machine: {describe_machine(metrics['machine'])}.", ""]
    if usage:
        lines += ["## Usage", "", *usage]
    lines += ["## Recipe", "", "```yaml", dump_recipe(recipe).rstrip(), "```", ""]
    return "\n".join(lines)
