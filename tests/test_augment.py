"""Training-time augmentation on log-mel frames: which axis each perturbation moves, and by how much."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import AugmentConfig, load_recipe
from pipeline.data.augment import augment_input
from pipeline.errors import RecipeError

FRAMES, BINS, PEAK = 200, 80, 30
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "asr" / "conformer_quickstart.yaml"


def spectrum() -> np.ndarray:
    """(frames, bins): the same spectrum in every frame, one peak at bin PEAK."""
    column = np.exp(-0.5 * ((np.arange(BINS) - PEAK) / 2.0) ** 2).astype(np.float32)
    return np.tile(column, (FRAMES, 1))


def peak_bin(x: np.ndarray) -> float:
    return float(x.mean(axis=0).argmax())


def test_tempo_moves_the_time_axis_only() -> None:
    out = augment_input(spectrum(), AugmentConfig(tempo=[1.25, 1.25]), 16000)
    assert out.shape == (round(FRAMES / 1.25), BINS)  # 25% faster speech: 25% fewer frames
    np.testing.assert_allclose(out, spectrum()[: out.shape[0]], atol=1e-6)  # pitch and formants kept


def test_speed_moves_both_axes_and_vtlp_the_frequency_axis_only() -> None:
    fast = augment_input(spectrum(), AugmentConfig(speed=[1.25, 1.25]), 16000)
    assert fast.shape == (round(FRAMES / 1.25), BINS)
    assert peak_bin(fast) == pytest.approx(PEAK * 1.25, abs=1.0)
    warped = augment_input(spectrum(), AugmentConfig(vtlp=0.2), 16000)
    assert warped.shape == (FRAMES, BINS)
    assert 0.79 * PEAK <= peak_bin(warped) <= 1.21 * PEAK


def test_tempo_and_speed_compose_on_the_time_axis() -> None:
    out = augment_input(spectrum(), AugmentConfig(speed=[1.1, 1.1], tempo=[1.2, 1.2]), 16000)
    assert out.shape[0] == round(FRAMES / (1.1 * 1.2))
    assert peak_bin(out) == pytest.approx(PEAK * 1.1, abs=1.0)  # only speed moves the pitch


def test_draws_follow_the_torch_generator() -> None:
    cfg = AugmentConfig(tempo=[0.8, 1.4])
    torch.manual_seed(3)
    a = [augment_input(spectrum(), cfg, 16000).shape[0] for _ in range(5)]
    torch.manual_seed(3)
    b = [augment_input(spectrum(), cfg, 16000).shape[0] for _ in range(5)]
    assert a == b and len(set(a)) > 1


@pytest.mark.parametrize("override", ["data.augment.tempo=[1.3, 0.9]", "data.augment.speed=[0, 1.1]",
                                      "data.augment.tempo=[1.1]"])
def test_bad_range_is_a_recipe_error_naming_the_key(override: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        load_recipe(RECIPE, [override])
