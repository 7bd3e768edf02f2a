"""Noise and reverberation on training waveforms: the level they are mixed at, where they come from, and the wiring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.config import AugmentConfig, DataSpec, load_recipe
from pipeline.data.noise import Corruptor, Recordings, colored_noise, synthetic_rir
from pipeline.errors import RecipeError

SR = 16000
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "asr" / "conformer_quickstart.yaml"


def tone(freq: float, seconds: float, sr: int, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean).astype(np.float64) ** 2)))


def peak_hz(x: np.ndarray, sr: int) -> float:
    return float(np.fft.rfftfreq(x.size, 1 / sr)[np.argmax(np.abs(np.fft.rfft(x)))])


def noise_folder(root: Path) -> Path:
    """Two usable noise files (a 1 kHz tone at 8 kHz in stereo, a 3 kHz tone at 16 kHz) and one that is not audio."""
    folder = root / "noise"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "hum.wav", np.stack([tone(1000, 2.0, 8000)] * 2, axis=1), 8000)
    sf.write(folder / "sub" / "whine.flac", tone(3000, 0.3, SR), SR)  # shorter than an utterance: looped
    (folder / "broken.wav").write_bytes(b"RIFF not really")
    return folder


def recordings(folder: Path) -> Recordings:
    import datasets

    files = sorted(str(p) for p in folder.rglob("*") if p.suffix in (".wav", ".flac") and p.stat().st_size > 100)
    info = [sf.info(f) for f in files]
    table = datasets.Dataset.from_dict({"audio": files, "duration": [i.frames / i.samplerate for i in info],
                                        "sample_rate": [i.samplerate for i in info]})
    return Recordings(table, SR)


def test_noise_from_files_is_resampled_looped_and_mixed_at_the_drawn_snr(tmp_path: Path) -> None:
    noise = recordings(noise_folder(tmp_path))
    corrupt = Corruptor(AugmentConfig(noise=DataSpec(str(tmp_path)), noise_prob=1.0, noise_snr=[7.0, 7.0]), SR, noise=noise)
    clean = tone(200, 1.0, SR, amp=0.5)
    torch.manual_seed(0)
    heard = set()
    for _ in range(12):
        noisy = corrupt(clean, reverb=False, noise=True)
        assert noisy.shape == clean.shape and np.isfinite(noisy).all()
        assert snr_db(clean, noisy) == pytest.approx(7.0, abs=0.05)
        heard.add(round(peak_hz(noisy - clean, SR)))
    assert heard == {1000, 3000}  # both files, each at its own pitch after resampling to 16 kHz


def test_synthetic_noise_has_the_drawn_colour() -> None:
    torch.manual_seed(0)
    freqs = np.fft.rfftfreq(64000, 1 / SR)
    for beta in (0.0, 1.0, 2.0):
        power = np.abs(np.fft.rfft(colored_noise(64000, beta))) ** 2
        low, high = power[(freqs > 100) & (freqs < 200)].mean(), power[(freqs > 3200) & (freqs < 6400)].mean()
        assert 10 * np.log10(low / high) == pytest.approx(10 * beta * np.log10(32), abs=1.5)  # 1/f^beta over 5 octaves


def test_synthetic_room_has_its_direct_to_reverberant_ratio_and_decay() -> None:
    torch.manual_seed(0)
    h = synthetic_rir(0.6, SR, drr_db=6.0).astype(np.float64)
    assert np.sum(h**2) == pytest.approx(1.0, rel=1e-5) and np.argmax(np.abs(h)) == 0
    assert 10 * np.log10(h[0] ** 2 / np.sum(h[1:] ** 2)) == pytest.approx(6.0, abs=1e-4)
    window = int(0.02 * SR)  # the tail's level 0.1 s and 0.4 s in: 60 dB per 0.6 s is 15 dB per 0.15 s
    level = [10 * np.log10(np.mean(h[int(t * SR): int(t * SR) + window] ** 2)) for t in (0.1, 0.25, 0.4)]
    assert np.diff(level) == pytest.approx([-15.0, -15.0], abs=2.5)


def test_recorded_room_is_aligned_at_its_direct_path_and_keeps_the_level(tmp_path: Path) -> None:
    h = np.zeros(4000, dtype=np.float32)
    h[300], h[900], h[2000] = 1.0, 0.5, 0.25  # 300 samples of flight before the direct path
    (tmp_path / "rir").mkdir()
    sf.write(tmp_path / "rir" / "hall.wav", h, SR, subtype="FLOAT")
    corrupt = Corruptor(AugmentConfig(reverb=DataSpec("rir"), reverb_prob=1.0), SR, rirs=recordings(tmp_path / "rir"))
    clicks = np.zeros(SR, dtype=np.float32)
    clicks[[1000, 8000]] = 1.0
    wet = corrupt(clicks, reverb=True, noise=False)
    assert wet.shape == clicks.shape
    assert np.mean(wet**2) == pytest.approx(np.mean(clicks**2), rel=1e-4)
    echoes = np.flatnonzero(np.abs(wet) > 1e-3)
    np.testing.assert_array_equal(echoes, [1000, 1600, 2700, 8000, 8600, 9700])  # no delay: labels stay in place
    assert wet[1000] / wet[1600] == pytest.approx(2.0, rel=1e-4)


def test_training_batches_hear_noise_and_reverb_and_report_bad_noise_files(tmp_path: Path, tiny_corpus: Path) -> None:
    """Wiring: the task measures the noise folder once (a bad file is skipped and reported), corrupts each
    training utterance with the probability asked, draws from torch's generator, and keeps clean features cached."""
    from accelerate import Accelerator
    from conftest import tiny_overrides

    from pipeline.tasks import build_task

    folder = noise_folder(tmp_path)

    def batch(prob: float, seed: int, reverb: str = "null") -> tuple[torch.Tensor, object]:
        recipe = load_recipe(RECIPE, [*tiny_overrides("parakeet"), f"output_dir={tmp_path / 'out'}",
                                      f"data.train={tiny_corpus / 'train'}", "data.eval=null", "data.augment.speed=null",
                                      "data.augment.vtlp=0", "model.mask_time_prob=0", "model.mask_feature_prob=0",
                                      f"data.augment.noise={folder}", f"data.augment.noise_prob={prob}",
                                      "data.augment.noise_snr=[0, 0]", f"data.augment.reverb={reverb}",
                                      "data.augment.reverb_prob=1"])
        task = build_task(recipe)
        task.setup(Accelerator(cpu=True))
        torch.manual_seed(seed)
        return task.collate([task.train_example(i) for i in range(4)])["input_features"], task

    clean, task = batch(0.0, 0)
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    skipped = [r for r in report["skipped"] if r["split"] == "noise"]
    assert [Path(r["audio"]).name for r in skipped] == ["broken.wav"], report
    assert len(task._corrupt.noise) == 2

    noisy, _ = batch(1.0, 0)
    again, _ = batch(1.0, 0)
    other, _ = batch(1.0, 1)
    assert noisy.shape == clean.shape  # the same frames: noise is added, not appended
    assert (noisy - clean).abs().mean() > 0.1 * clean.abs().mean()
    assert torch.equal(noisy, again) and not torch.equal(noisy, other)

    wet, _ = batch(0.0, 0, reverb="synthetic")
    assert wet.shape == clean.shape and not torch.equal(wet, clean)


@pytest.mark.parametrize("override,key", [("data.augment.noise_prob=1.5", "noise_prob"),
                                          ("data.augment.reverb_prob=-0.1", "reverb_prob"),
                                          ("data.augment.noise_snr=[20, 5]", "noise_snr"),
                                          ("data.augment.reverb_rt60=[0, 1]", "reverb_rt60")])
def test_bad_noise_settings_are_recipe_errors_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(RecipeError, match=rf"data\.augment\.{key}"):
        load_recipe(RECIPE, [override])


def test_evaluation_corruption_is_a_function_of_the_row_and_seed_alone() -> None:
    """Every model hears the same corrupted test set: the noise window depends on the row and seed, not on the
    SNR (only its scale changes) nor on what the random generator did before."""
    from pipeline.evaluation.robustness import Corruption, FixedCorruptor

    clean = tone(300, 1.0, SR)
    corruption = Corruption(noise=DataSpec("synthetic"), snrs=[20.0, 0.0], seed=3)
    at20, at0 = (FixedCorruptor(corruption, snr, SR, None, None) for snr in (20.0, 0.0))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = at20(5, clean)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    torch.manual_seed(123)
    np.testing.assert_array_equal(a, at20(5, clean))
    assert snr_db(clean, a) == pytest.approx(20.0, abs=0.01) and snr_db(clean, at0(5, clean)) == pytest.approx(0.0, abs=0.01)
    n20, n0 = a - clean, at0(5, clean) - clean
    assert np.corrcoef(n20, n0)[0, 1] > 0.9999  # the same window, 20 dB louder
    assert abs(np.corrcoef(n20, at20(6, clean) - clean)[0, 1]) < 0.1  # another row, another window
    other = FixedCorruptor(Corruption(noise=DataSpec("synthetic"), seed=4), 20.0, SR, None, None)
    assert abs(np.corrcoef(n20, other(5, clean) - clean)[0, 1]) < 0.1


def test_evaluate_script_scores_each_condition(trained_tiny_model: Path, tiny_corpus: Path, tmp_path: Path,
                                               run_script) -> None:
    out = tmp_path / "eval"
    proc = run_script("evaluate.py", "--model", trained_tiny_model, "--data", tiny_corpus / "test", "--output", out,
                      "--noise", "synthetic", "--snr", "30,0", "--reverb", "synthetic", "--rt60", "0.3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "robustness.json").read_text())
    assert [c["condition"] for c in summary["conditions"]] == ["reverb_snr30", "reverb_snr0"]
    assert summary["rt60"] == 0.3 and summary["noise"] == "synthetic"
    clean = json.loads((out / "metrics.json").read_text())
    assert summary["clean"]["wer"] == clean["wer"]
    for c in summary["conditions"]:
        metrics = json.loads((out / c["condition"] / "metrics.json").read_text())
        assert metrics["num_utterances"] == clean["num_utterances"] == 12 and metrics["wer"] == c["wer"]
        assert "reverb synthetic (RT60 0.3 s)" in metrics["condition"]
    assert (out / "robustness.png").stat().st_size > 1000
    heard = [[json.loads(x)["hypothesis_raw"] for x in (out / name / "predictions.jsonl").read_text().splitlines()]
             for name in (".", "reverb_snr0")]
    assert heard[0] != heard[1]  # the model was given the corrupted audio, not the clean files
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(printed["robustness"]) == {"reverb_snr30", "reverb_snr0"}


@pytest.mark.parametrize("args,message", [
    ({"snr": "10"}, "--snr needs --noise or --reverb"),
    ({"reverb": "synthetic", "snr": "10"}, "--snr needs --noise"),
    ({"noise": "synthetic", "rt60": 0.5}, "--rt60 sets synthetic rooms"),
    ({"noise": "synthetic", "snr": "10,ten"}, "--snr: expected comma-separated numbers"),
    ({"noise": "synthetic", "snr": "10,10"}, "--snr: expected distinct"),
    ({"reverb": "synthetic", "rt60": 0.0}, r"--rt60: expected seconds in \(0, 10\]"),
])
def test_corruption_arguments_are_checked(args: dict, message: str) -> None:
    import argparse

    from pipeline.evaluation.robustness import parse_corruption

    namespace = argparse.Namespace(**{"noise": None, "snr": None, "reverb": None, "rt60": None, "corrupt_seed": None, **args})
    with pytest.raises(RecipeError, match=message):
        parse_corruption(namespace)


@pytest.mark.parametrize("n,taps", [(8800, 8000), (1, 5), (1000, 3000), (4097, 1)])
def test_reverberation_is_the_convolution_cut_to_the_input(n: int, taps: int) -> None:
    import torchaudio.functional as AF

    from pipeline.data.noise import reverberate

    x, h = torch.randn(n, dtype=torch.float64), torch.randn(taps, dtype=torch.float64)
    torch.testing.assert_close(reverberate(x, h), AF.fftconvolve(x, h)[:n])


def test_an_unusable_noise_spec_is_an_error_naming_the_key(tmp_path: Path, tiny_corpus: Path) -> None:
    from accelerate import Accelerator
    from conftest import tiny_overrides

    from pipeline.errors import DataError
    from pipeline.tasks import build_task

    (tmp_path / "empty").mkdir()
    for key, spec, message in (("noise", tmp_path / "missing", "no such file or folder"),
                               ("reverb", tmp_path / "empty", "no audio files")):
        recipe = load_recipe(RECIPE, [*tiny_overrides("parakeet"), f"output_dir={tmp_path / 'out'}",
                                      f"data.train={tiny_corpus / 'train'}", "data.eval=null", f"data.augment.{key}={spec}"])
        with pytest.raises(DataError, match=rf"^data\.augment\.{key}: {spec}: .*{message}"):
            build_task(recipe).setup(Accelerator(cpu=True))


def test_impulse_responses_kept_in_memory_stay_within_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.data.noise as noise

    (tmp_path / "rirs").mkdir()
    for k in range(4):
        h = np.zeros(1000, dtype=np.float32)
        h[10 * k], h[500] = 1.0, 0.5
        sf.write(tmp_path / "rirs" / f"room{k}.wav", h, SR, subtype="FLOAT")
    rooms = recordings(tmp_path / "rirs")
    monkeypatch.setattr(noise, "RIR_CACHE_BYTES", 2 * 1000 * 4)  # two of the four (each ~1000 float32 samples)
    torch.manual_seed(0)
    seen = [rooms.impulse_response() for _ in range(40)]
    assert all(np.sum(h.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-5) and np.argmax(h) == 0 for h in seen)
    assert len({h.size for h in seen}) == 4  # every room still served: 1000, 990, 980, 970 samples after the delay
    assert len(rooms._whole) == 2 and rooms._cached_bytes <= noise.RIR_CACHE_BYTES
