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


def tone_in_silence(sr: int = 16000) -> np.ndarray:
    """0.3 s of faint noise, 0.5 s of a 300-Hz tone, 0.2 s of faint noise."""
    rng = np.random.default_rng(0)
    audio = 1e-4 * rng.standard_normal(sr).astype(np.float32)
    audio[int(0.3 * sr) : int(0.8 * sr)] += 0.5 * np.sin(2 * np.pi * 300 * np.arange(int(0.5 * sr)) / sr)
    return audio


def test_speech_span_finds_the_loud_frames() -> None:
    from pipeline.audio import speech_span

    span = speech_span(tone_in_silence(), 16000, -20.0)
    assert span == (int(0.3 * 16000), int(0.8 * 16000))
    assert speech_span(np.zeros(1600, dtype=np.float32), 16000, -20.0) is None


def test_trim_cuts_log_mel_to_the_speech_as_the_extractor_would() -> None:
    """Cutting the standardised features to the tone equals the extractor's features of the cut audio."""
    from transformers import ParakeetFeatureExtractor

    from pipeline.audio import speech_span
    from pipeline.evaluation.inference import utterance_features

    fe, audio = ParakeetFeatureExtractor(), tone_in_silence()
    feats, valid = utterance_features(fe, audio)
    start, end = speech_span(audio, 16000, -20.0)  # type: ignore[misc]
    frames = (start // fe.hop_length, end // fe.hop_length)
    out = augment_input(feats[:valid], AugmentConfig(trim=1.0), 16000, speech=frames)
    cut, n = utterance_features(fe, audio[start:end])
    assert out.shape[0] == frames[1] - frames[0] and abs(out.shape[0] - n) <= 1
    inner = slice(3, min(n, out.shape[0]) - 3)  # the STFT's edge frames see the cut's zero padding
    np.testing.assert_allclose(out[inner], cut[:n][inner], atol=0.15)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)
    assert augment_input(feats[:valid], AugmentConfig(trim=0.0), 16000, speech=frames).shape[0] == valid


def test_asr_training_batches_are_trimmed_to_the_speech(tmp_path: Path, tiny_corpus: Path) -> None:
    """Wiring: the task measures each utterance's loud span once and collation cuts to it."""
    import soundfile as sf
    from accelerate import Accelerator
    from conftest import tiny_overrides

    from pipeline.tasks import build_task

    rows = (tiny_corpus / "train" / "metadata.csv").read_text(encoding="utf-8").splitlines()[1:4]
    padded = tmp_path / "padded"
    padded.mkdir()
    lines = ["file_name,text,speaker"]
    for row in rows:  # half a second of near-silence either side of each utterance
        name = row.split(",")[0]
        audio, sr = sf.read(tiny_corpus / "train" / name, dtype="float32")
        quiet = 1e-4 * np.random.default_rng(0).standard_normal(sr // 2).astype(np.float32)
        sf.write(padded / name, np.concatenate([quiet, audio, quiet]), sr)
        lines.append(row)
    (padded / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def frames(trim: float) -> tuple[list[int], int]:
        recipe = load_recipe(RECIPE, [*tiny_overrides("parakeet"), f"output_dir={tmp_path / 'out'}",
                                      f"data.train={padded}", "data.eval=null", "data.augment.speed=null",
                                      "data.augment.vtlp=0", f"data.augment.trim={trim}", "model.mask_time_prob=0",
                                      "model.mask_feature_prob=0"])
        task = build_task(recipe)
        task.setup(Accelerator(cpu=True))
        batch = task.collate([task.train_example(i) for i in range(len(rows))])
        return batch["attention_mask"].sum(-1).tolist(), int(task.feature_extractor.hop_length)

    from pipeline.audio import read_audio, speech_span

    (full, hop), (cut, _) = frames(0.0), frames(1.0)
    spans = [speech_span(read_audio(padded / row.split(",")[0], 16000)[0], 16000, -20.0) for row in rows]
    expected = [(end - start) / hop for start, end in spans]  # the speech alone, in the recipe's feature frames
    assert all(f - c >= 0.95 * 16000 / hop for c, f in zip(cut, full, strict=True)), (full, cut)  # the added second
    assert all(abs(c - e) <= 2 for c, e in zip(cut, expected, strict=True)), (cut, expected, hop)


@pytest.mark.parametrize("override", ["data.augment.trim=1.5", "data.augment.trim_db=0"])
def test_bad_trim_is_a_recipe_error(override: str) -> None:
    with pytest.raises(RecipeError, match=r"data\.augment\.trim"):
        load_recipe(RECIPE, [override])
