"""Intermediate CTC (`model.inter_ctc_weight`, `model.inter_ctc_layer`): the ASR task's loss and its checks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from conftest import tiny_overrides

from pipeline.config import load_recipe
from pipeline.errors import RecipeError
from pipeline.tasks import build_task

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "asr" / "conformer_quickstart.yaml"
PLAIN = ["data.eval=null", "data.augment.speed=null", "data.augment.vtlp=0", "model.mask_time_prob=0",
         "model.mask_feature_prob=0"]


def _task(tmp_path: Path, corpus: Path, *overrides: str, family: str = "parakeet"):  # noqa: ANN202
    recipe = load_recipe(RECIPE, [*tiny_overrides(family), f"output_dir={tmp_path / 'out'}",
                                  f"data.train={corpus / 'train'}", *PLAIN, *overrides])
    task = build_task(recipe)
    task.setup(Accelerator(cpu=True))
    return task


def test_loss_adds_the_shared_heads_ctc_on_the_chosen_layer(tmp_path: Path, tiny_corpus: Path) -> None:
    """(1 - w) x the model's own loss + w x the loss the same model has when its encoder stops at that layer."""
    weight = 0.25
    task = _task(tmp_path, tiny_corpus, "model.config.encoder_config.num_hidden_layers=3",
                 f"model.inter_ctc_weight={weight}", "model.inter_ctc_layer=1")
    model = task.model.eval()  # no dropout: the three forwards below see the same network
    batch = task.collate([task.train_example(i) for i in range(4)])
    loss, units = task.loss(model, batch)
    inputs = {"input_features": batch["input_features"], "attention_mask": batch["attention_mask"],
              "labels": batch["labels"]}
    full = model(**inputs).loss
    truncated = copy.deepcopy(model)
    truncated.encoder.layers = truncated.encoder.layers[:1]
    first = truncated(**inputs).loss
    assert weight * abs(first.item() - full.item()) > 0.05  # far beyond float rounding: the layer choice is tested
    torch.testing.assert_close(loss, (1 - weight) * full + weight * first)
    assert units == sum(len(task.tokenizer(t).input_ids) for t in [task.train_example(i)["text"] for i in range(4)])
    loss.backward()  # the intermediate term trains the shared head and the first layer
    assert model.encoder.layers[0].feed_forward1.linear1.weight.grad.abs().sum() > 0


def test_the_middle_layer_by_default_and_bad_layers_or_families_are_recipe_errors(tmp_path: Path,
                                                                                    tiny_corpus: Path) -> None:
    task = _task(tmp_path, tiny_corpus, "model.config.encoder_config.num_hidden_layers=4", "model.inter_ctc_weight=0.3")
    assert task._inter_ctc_layer == 2
    for layer in (0, 4):
        with pytest.raises(RecipeError, match=r"model\.inter_ctc_layer: .*from 1 to 3"):
            _task(tmp_path, tiny_corpus, "model.config.encoder_config.num_hidden_layers=4",
                  "model.inter_ctc_weight=0.3", f"model.inter_ctc_layer={layer}")
    with pytest.raises(RecipeError, match=r"model\.inter_ctc_weight: .*parakeet family, not wav2vec2"):
        _task(tmp_path, tiny_corpus, "model.inter_ctc_weight=0.3", family="wav2vec2")
    with pytest.raises(RecipeError, match=r"model\.inter_ctc_weight: must be in \[0, 1\)"):
        load_recipe(RECIPE, ["model.inter_ctc_weight=1.0"])
