"""`train.gradient_checkpointing`: layers recompute in the backward pass, and nothing else changes.

The Conformer case end to end (dropout and BatchNorm included, weights bit for bit) is in tests/test_resume.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from conftest import tiny_overrides
from transformers.modeling_layers import GradientCheckpointingLayer

from pipeline.config import load_recipe
from pipeline.errors import RecipeError
from pipeline.models.fast_forward import speed_up
from pipeline.tasks import build_task
from pipeline.training.activation_checkpointing import enable_gradient_checkpointing

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread_module")


# Parakeet on our CPU forwards, as the loop runs it. Our wav2vec 2.0 waveform encoder hands over to transformers'
# under checkpointing (other kernels: gradients within 1e-4 relative), so that case compares transformers' own.
@pytest.mark.parametrize(("family", "fast"), [("wav2vec2", False), ("parakeet", True)])
def test_layers_run_twice_and_gradients_do_not_change(family: str, fast: bool, tiny_corpus: Path,
                                                      tmp_path: Path) -> None:
    recipe = load_recipe(REPO / "recipes" / "asr" / "conformer_quickstart.yaml", [
        *tiny_overrides(family), f"output_dir={tmp_path}", f"data.train={tiny_corpus / 'train'}", "data.eval=null",
        "data.augment.vtlp=0", "data.augment.tempo=null", "model.layerdrop=0",
        "model.mask_time_prob=0.3"])  # masking and dropout draw random numbers inside the checkpointed layers
    task = build_task(recipe)
    task.setup(Accelerator(cpu=True))
    model = (speed_up(task.model) if fast else task.model).train()
    durations = task.train_durations()
    batch = task.collate([task.train_example(i) for i in sorted(range(len(durations)), key=durations.__getitem__)[:2]])
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    # hooks run outside a checkpointed layer's forward, not again when it recomputes: count the products inside
    calls: list[str] = []
    for name, linear in model.named_modules():
        if isinstance(linear, torch.nn.Linear) and "encoder.layers." in name:
            linear.register_forward_hook(lambda *_, name=name: calls.append(name))

    def gradients() -> dict[str, torch.Tensor]:
        torch.manual_seed(3)
        np.random.seed(3)  # transformers' wav2vec 2.0 masking draws from numpy
        model.zero_grad()
        loss, _ = task.loss(model, batch)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    once = sorted(calls)
    calls.clear()
    assert once and enable_gradient_checkpointing(model) == len(layers)
    checkpointed = gradients()
    assert sorted(calls) == sorted(once * 2)  # forward, then again in the backward pass
    assert plain.keys() == checkpointed.keys() and plain
    different = [n for n in plain if not torch.equal(plain[n], checkpointed[n])]
    assert not different, different


def test_models_without_it_are_named() -> None:
    for recipe in ("tts/vocoder_quickstart.yaml", "tts/quickstart.yaml"):
        with pytest.raises(RecipeError, match="train.gradient_checkpointing: the (vocoder|acoustic) task's model"):
            load_recipe(REPO / "recipes" / recipe, ["train.gradient_checkpointing=true"])
    load_recipe(REPO / "recipes" / "ssl" / "quickstart.yaml", ["train.gradient_checkpointing=true"])
    with pytest.raises(RecipeError, match="train.gradient_checkpointing: Linear does not support it"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))
