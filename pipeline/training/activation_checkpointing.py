"""`train.gradient_checkpointing`: encoder layers recompute their activations in the backward pass.

transformers' activation checkpointing, non-reentrant (`torch.utils.checkpoint` replays the random state, so
dropout masks match the forward's), plus what it lacks for Conformers: their convolution modules' BatchNorm would
update its running statistics a second time while a layer recomputes.
"""

from __future__ import annotations

import contextlib

import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from pipeline.errors import RecipeError


class _KeepNormStatistics:
    """Entered while a checkpointed layer recomputes its forward: BatchNorm running statistics come out as they went
    in. The forward already updated them with this batch; the recomputation would do it a second time (Conformer
    convolution modules have BatchNorm), and a checkpointed run would not train the model an ordinary run does."""

    def __init__(self, norms: list[torch.nn.modules.batchnorm._BatchNorm]) -> None:
        self.norms = norms
        self.saved: list[list[torch.Tensor]] = []

    def __enter__(self) -> None:
        self.saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in self.norms]

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for m, saved in zip(self.norms, self.saved, strict=True):
                for buffer, value in zip((m.running_mean, m.running_var, m.num_batches_tracked), saved, strict=True):
                    buffer.copy_(value)


def enable_gradient_checkpointing(model: torch.nn.Module) -> int:
    """Switch on transformers' gradient checkpointing (non-reentrant `torch.utils.checkpoint`, which replays the
    random state, so dropout masks match the forward's); returns how many layers recompute. The arithmetic is an
    ordinary run's: the same weights, BatchNorm statistics included, step for step."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise RecipeError(f"train.gradient_checkpointing: {type(model).__name__} does not support it")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats and m.running_mean is not None]
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={
        "use_reentrant": False, "context_fn": lambda: (contextlib.nullcontext(), _KeepNormStatistics(norms))})
    return sum(1 for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing)
