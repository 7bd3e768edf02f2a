"""Diffusion vocoder: model, samplers, mel presets, metrics, and training through the shared loop (tiny preset)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import ModelError
from pipeline.tts.diffwave import PRESETS, DiffWave, Workspace, model_kwargs, split_hop
from pipeline.tts.inference import Vocoder, VocoderSettings
from pipeline.tts.mel import MelFrontEnd, check_compatible, get_mel_config
from pipeline.tts.metrics import GriffinLim, log_mel_l1, mr_stft, pesq_wb, stoi
from pipeline.tts.sampling import FAST_BETAS, fast_steps, sample, training_scheduler
from pipeline.tts.spectral import SpectralShaper

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "tts" / "vocoder_quickstart.yaml"
TINY = ["model.config={preset: tiny}", "train.threads=1", "train.max_minutes=null", "train.warmup_steps=0",
        "train.batch_seconds=2", "train.log_every=1"]


pytestmark = pytest.mark.usefixtures("one_thread_module")


def tiny_model(seed: int = 0) -> DiffWave:
    torch.manual_seed(seed)
    model = DiffWave(**model_kwargs({"preset": "tiny"}))
    torch.nn.init.normal_(model.output_projection.weight, std=0.1)  # zero-initialised: make outputs depend on weights
    return model.eval()


@pytest.fixture(scope="module")
def voc_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.synth.corpus import synthesize_corpus

    out = tmp_path_factory.mktemp("voc_corpus") / "corpus"
    synthesize_corpus(out, n_train=8, n_test=2, seed=7, sample_rate=16000, progress=False)
    return out


def _speech(corpus: Path) -> np.ndarray:
    from pipeline.audio import read_audio

    return read_audio(str(corpus / "test" / "000000.wav"), 16000)[0]


# ------------------------------------------------------------------------------------------------
def test_presets_and_paper_facts() -> None:
    base = DiffWave(**model_kwargs({"preset": "base"}))
    assert abs(base.num_parameters_m() - 2.6) < 0.05  # the paper's BASE: 2.6 M
    assert base.config.upsample_strides == [16, 16] and split_hop(256) == [16, 16]
    assert set(PRESETS) >= {"base", "small", "tiny"}
    steps = fast_steps(training_scheduler().alphas_cumprod, FAST_BETAS)
    assert np.allclose(steps, [0.0, 0.8941, 4.0867, 10.4518, 22.9925, 42.9186], atol=1e-3)


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = tiny_model()
    voc = Vocoder(model, get_mel_config("speecht5"), VocoderSettings(prior=True, prior_energy_ref=0.5))
    voc.save_pretrained(tmp_path)
    assert {"config.json", "diffusion_pytorch_model.safetensors", "mel_config.json", "vocoder.json"} <= {p.name for p in tmp_path.iterdir()}
    loaded = Vocoder.from_pretrained(tmp_path)
    assert loaded.settings.prior and loaded.settings.prior_energy_ref == 0.5
    assert loaded.mel_config == voc.mel_config
    x, mel, t = torch.randn(2, 1280), torch.randn(2, 80, 5), torch.tensor([2.5, 40.0])
    with torch.no_grad():
        assert torch.equal(model(x, mel, t), loaded.model(x, mel, t))
    mel = torch.rand(80, 5) - 3.0
    assert torch.equal(voc(mel, seed=3), loaded(mel, seed=3))


@pytest.mark.parametrize("sampler", ["fast", "ddim", "dpm", "ddpm"])
@pytest.mark.parametrize("steps", [6, 50])
@pytest.mark.parametrize("prior", ["none", "energy", "spectral"])
def test_samplers_give_finite_audio_of_the_right_length(sampler: str, steps: int, prior: str) -> None:
    model = tiny_model()
    settings = VocoderSettings(prior=prior == "energy", prior_energy_ref=0.3, spectral_prior=prior == "spectral")
    voc = Vocoder(model, get_mel_config("speecht5"), settings)
    mel = torch.rand(2, 80, 7) * 2 - 4.0
    audio = voc(mel, sampler=sampler, steps=steps, seed=0)
    assert audio.shape == (2, 7 * 256)
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0
    assert torch.equal(audio, voc(mel, sampler=sampler, steps=steps, seed=0))  # seeded: reproducible


def test_spectral_prior_whitens_colours_and_keeps_silence_silent(voc_corpus: Path) -> None:
    front_end = MelFrontEnd("speecht5")
    shaper = SpectralShaper(front_end)
    speech = torch.from_numpy(_speech(voc_corpus))
    audio = torch.cat([torch.zeros(8000), speech, torch.zeros(8000)])  # half a second of digital silence each side
    mel = front_end(audio)
    white = shaper.whiten(audio, mel)
    assert white.shape == audio.shape and 0.5 < float(white[8000:-8000].std()) < 2.0  # about unit variance
    back = shaper.color(white, mel)
    assert float((back - audio).pow(2).sum() / audio.pow(2).sum()) < 0.02  # L L^-1 x ~ x
    noise = torch.randn(audio.shape, generator=torch.Generator().manual_seed(0))
    coloured = shaper.color(noise, mel)
    flat = noise * speech.std() / noise.std()
    # unit white noise through L has the mel's envelope: far closer to the speech's mel than flat noise
    assert log_mel_l1(audio, coloured, front_end) < 0.6 * log_mel_l1(audio, flat, front_end)
    assert float(coloured[:6000].abs().max()) < 1e-6  # windows that see only silence stay silent
    with pytest.raises(ModelError, match="exclude each other"):
        sample(tiny_model(), mel[None, :, :4], std=torch.ones(1, 4 * 256), shaper=shaper)


def test_spectral_prior_saves_and_loads(tmp_path: Path) -> None:
    voc = Vocoder(tiny_model(), get_mel_config("speecht5"), VocoderSettings(spectral_prior=True, spectral_floor=0.01))
    voc.save_pretrained(tmp_path)
    loaded = Vocoder.from_pretrained(tmp_path)
    assert loaded.settings.spectral_prior and loaded.settings.spectral_floor == 0.01 and not loaded.settings.prior
    mel = torch.rand(80, 5) - 3.0
    assert torch.equal(voc(mel, seed=3), loaded(mel, seed=3))
    plain = Vocoder(voc.model, voc.mel_config, VocoderSettings())
    assert not torch.equal(voc(mel, seed=3), plain(mel, seed=3))  # the prior is applied, not just stored


def test_fast_sampler_rejects_other_step_counts() -> None:
    with pytest.raises(ModelError, match="ddim or dpm"):
        sample(tiny_model(), torch.zeros(1, 80, 3), sampler="fast", steps=4)


def test_mel_presets(voc_corpus: Path) -> None:
    from transformers import SpeechT5FeatureExtractor

    audio = _speech(voc_corpus)
    ours = MelFrontEnd("speecht5")(torch.from_numpy(audio)).numpy()
    theirs = SpeechT5FeatureExtractor()(audio_target=audio, sampling_rate=16000, return_tensors="np")["input_values"][0].T
    diff = np.abs(ours[:, : theirs.shape[1]] - theirs)
    assert ours.shape[0] == 80 and theirs.shape[1] >= 100
    # float32 (ours) vs float64 (theirs) STFTs agree to ~1e-7 of the peak: bins more than 7 decades down
    # are rounding noise whose log may differ by a few 1e-3; everything audible must agree to 1e-3
    audible = theirs > theirs.max() - 7.0
    assert audible.mean() > 0.5 and diff[audible].max() < 1e-3 and diff.max() < 2e-2
    lj = MelFrontEnd("ljspeech")
    assert lj(torch.zeros(256 * 12)).shape == (80, 12)  # HiFi-GAN framing: k hops -> k frames
    assert get_mel_config("hifigan").log == "ln" and get_mel_config("speecht5").log == "log10"


def test_mel_mismatch_is_rejected_with_both_presets_named() -> None:
    voc = Vocoder(tiny_model(), get_mel_config("speecht5"))
    mel = torch.full((80, 4), -5.0)
    with pytest.raises(ModelError, match=r"(?s)'ljspeech'.*'speecht5'"):
        voc(mel, mel_config="ljspeech")
    with pytest.raises(ModelError, match="n_mels=80"):
        voc(torch.zeros(100, 4))
    with pytest.raises(ModelError, match="floor"):  # natural-log mels of silence (-11.5) into a log10 vocoder
        voc(torch.full((80, 4), -11.5))
    check_compatible("hifigan", get_mel_config("ljspeech"))  # same features under another name: fine
    with pytest.raises(ModelError, match="mel preset"):
        Vocoder(tiny_model(), get_mel_config("speecht5").__class__(name="odd", sample_rate=16000, hop_length=200))


def test_metrics_on_known_signals(voc_corpus: Path) -> None:
    audio = _speech(voc_corpus)
    fe = MelFrontEnd("speecht5")
    assert pesq_wb(audio, audio, 16000) == pytest.approx(4.644, abs=0.01)
    assert log_mel_l1(audio, audio, fe) == 0.0 and mr_stft(audio, audio) == 0.0
    assert stoi(audio, audio, 16000) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(0)
    noisy = audio + 0.05 * rng.standard_normal(len(audio)).astype(np.float32)
    assert pesq_wb(audio, noisy, 16000) < 3.0 and mr_stft(audio, noisy) > 0.5
    gl = GriffinLim(fe)(fe(torch.from_numpy(audio)), len(audio))
    assert gl.shape == (len(audio),) and torch.isfinite(gl).all()
    assert 0.0 < log_mel_l1(audio, gl, fe) < log_mel_l1(audio, noisy, fe) + 1.0


@pytest.mark.parametrize("batch", [1, 2])
def test_sampling_forward_matches_the_training_forward(batch: int) -> None:
    """Without autograd the layers take `_sample_forward` (fused products, tanh through a sigmoid): same numbers."""
    torch.manual_seed(0)
    model = DiffWave(**model_kwargs({"preset": "tiny"}))
    for p in model.parameters():  # the output layer starts at zero: give every weight a value
        torch.nn.init.normal_(p, std=0.3)
    frames = 12
    mel = torch.randn(batch, 80, frames) - 4
    audio = torch.randn(batch, frames * model.config.hop_length)
    steps = torch.tensor([3.0, 41.5][:batch])
    trained = model(audio, mel, steps)
    assert trained.requires_grad
    with torch.inference_mode():
        sampled = model(audio, mel, steps)
    assert trained.abs().max() > 0.1
    torch.testing.assert_close(sampled, trained.detach(), rtol=1e-5, atol=1e-5)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 runs evaluate under autocast
        mixed = model(audio, mel, steps)
    torch.testing.assert_close(mixed.float(), trained.detach(), rtol=0.1, atol=0.1)


@pytest.mark.parametrize("batch", [1, 2])
def test_conditioning_kept_across_steps_gives_the_same_noise(batch: int) -> None:
    """A Workspace kept across a sample's steps computes each layer's conditioning once; every step still predicts
    what a fresh forward does, whether all layers, some (a small budget) or none are kept, and a new mel is not
    served the old one's conditioning."""
    torch.manual_seed(0)
    model = DiffWave(**model_kwargs({"preset": "tiny"}))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    hop = model.config.hop_length
    mels = [torch.randn(batch, 80, 12) - 4, torch.randn(batch, 80, 12) - 4]
    per_layer_mb = batch * (12 * hop + 8) * 2 * model.config.residual_channels * 4 / 2**20  # rows x 2C floats, upper bound
    for budget, kept in ((0.0, 0), (2.5 * per_layer_mb, 2), (1e3, len(model.layers))):
        work = Workspace(budget)
        with torch.inference_mode():
            for mel in mels:
                upsampled = model.upsample(mel)
                for t in (41.5, 20.0, 3.0):
                    audio, step = torch.randn(batch, 12 * hop), torch.full((batch,), t)
                    fresh = model(audio, mel, step)
                    kept_out = model(audio, None, step, upsampled=upsampled, workspace=work)
                    assert fresh.abs().max() > 0.1
                    torch.testing.assert_close(kept_out, fresh, rtol=0, atol=0)
                    assert len(work.conditioning) == kept
                if batch == 1:  # the same mel for a batch of two noisy signals: sums laid out for that batch
                    audio, step = torch.randn(2, 12 * hop), torch.full((2,), 7.0)
                    torch.testing.assert_close(model(audio, None, step, upsampled=upsampled, workspace=work),
                                               model(audio, mel, step), rtol=0, atol=0)


def test_overfitting_one_crop_reduces_the_loss() -> None:
    torch.manual_seed(0)
    model = DiffWave(**model_kwargs({"preset": "tiny"}))
    sched = training_scheduler()
    t = torch.arange(0, 50, 6)
    x0 = (0.5 * torch.sin(torch.arange(2560) * 0.05)).expand(len(t), -1)
    mel = MelFrontEnd("speecht5")(x0[0])[:, :10].expand(len(t), -1, -1)
    noise = torch.randn(x0.shape)
    noisy = sched.add_noise(x0, noise, t)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = (model(noisy, mel, t.float()) - noise).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_training_through_the_shared_loop(voc_corpus: Path, tmp_path: Path, run_script) -> None:
    out = tmp_path / "run"
    proc = run_script("train.py", str(QUICKSTART), *TINY, f"output_dir={out}", f"data.train={voc_corpus / 'train'}",
                      f"data.eval={voc_corpus / 'test'}", "train.max_steps=6", "train.eval_every=6", "train.save_every=6",
                      "vocoder.eval_utterances=1", "vocoder.samples=1", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 6 and all(np.isfinite(losses))
    results = json.loads((out / "train_results.json").read_text())
    assert results["steps"] == 6 and np.isfinite(results["eval_log_mel_l1"]) and "eval_gl_pesq" in results
    assert (out / "samples" / "eval-001" / "spectrograms.png").is_file()
    voc = Vocoder.from_pretrained(out)
    assert voc.mel_config.name == "speecht5" and voc.settings.spectral_prior  # the quickstart's prior
    # copy synthesis and evaluation scripts on the trained model
    proc = run_script("vocode.py", "--model", str(out), "--output", str(tmp_path / "voc"), str(voc_corpus / "test" / "000001.wav"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    import soundfile as sf

    wave, sr = sf.read(tmp_path / "voc" / "000001.wav")
    assert sr == 16000 and len(wave) == sf.info(str(voc_corpus / "test" / "000001.wav")).frames
    proc = run_script("evaluate_vocoder.py", "--model", str(out), "--data", str(voc_corpus / "test"), "--output",
                      str(tmp_path / "eval"), "--limit", "1", "--max-seconds", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["vocoder"]) >= {"log_mel_l1", "mr_stft", "pesq", "stoi", "rtf"}
    assert set(metrics["griffin_lim"]) >= {"log_mel_l1", "mr_stft", "pesq", "stoi"}


def test_resume_is_exact(voc_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Crop offsets, steps and noise come from checkpointed RNG state: 2 steps + resume == 4 steps straight."""
    import shutil

    from safetensors.torch import load_file

    from pipeline.config import load_recipe
    from pipeline.training.loop import run_training

    common = [*TINY, f"data.train={voc_corpus / 'train'}", "data.eval=null", "vocoder.eval_utterances=0",
              "train.max_steps=4", "train.save_every=2", "train.keep_last=3"]
    out = tmp_path / "run"
    run_training(load_recipe(QUICKSTART, [*common, f"output_dir={out}"]))
    straight = load_file(out / "diffusion_pytorch_model.safetensors")
    shutil.rmtree(out / "checkpoints" / "step-00000004")
    with caplog.at_level(logging.INFO, logger="pipeline.training.loop"):
        run_training(load_recipe(QUICKSTART, [*common, f"output_dir={out}", "train.resume=true"]))
    assert "resumed from" in caplog.text and "step 2" in caplog.text
    resumed = load_file(out / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_training_with_the_spectral_prior(voc_corpus: Path, tmp_path: Path) -> None:
    from pipeline.config import load_recipe
    from pipeline.errors import RecipeError
    from pipeline.training.loop import run_training

    common = [*TINY, f"data.train={voc_corpus / 'train'}", f"data.eval={voc_corpus / 'test'}", "vocoder.eval_utterances=1",
              "vocoder.samples=0", "train.max_steps=3", "train.eval_every=3", "train.save_every=3"]
    out = tmp_path / "run"
    run_training(load_recipe(QUICKSTART, [*common, f"output_dir={out}"]))  # the quickstart's prior is the spectral one
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    results = json.loads((out / "train_results.json").read_text())
    assert np.isfinite(results["eval_log_mel_l1"]) and np.isfinite(results["eval_mr_stft"])
    voc = Vocoder.from_pretrained(out)
    assert voc.settings.spectral_prior and not voc.settings.prior
    # continuing from it under another prior would train on other targets: refused before training
    with pytest.raises(ModelError, match="spectral_prior"):
        run_training(load_recipe(QUICKSTART, [*common, f"output_dir={tmp_path / 'again'}", f"model.name_or_path={out}",
                                              "vocoder.prior=true", "vocoder.spectral_prior=false"]))
    with pytest.raises(RecipeError, match="exclude each other"):
        load_recipe(QUICKSTART, ["vocoder.prior=true"])


def test_recipes_load() -> None:
    from pipeline.config import load_recipe

    quick = load_recipe(QUICKSTART)
    assert quick.task == "vocoder" and quick.vocoder.mel == "speecht5" and quick.data.train.path == "data/synth/train"
    assert (quick.vocoder.sampler, quick.vocoder.steps) == ("ddim", 6)
    assert quick.vocoder.spectral_prior and not quick.vocoder.prior
    lj = load_recipe(REPO / "recipes" / "tts" / "diffwave_ljspeech.yaml")
    assert lj.vocoder.mel == "ljspeech" and lj.model.config == {"preset": "base"} and lj.vocoder.prior
    assert get_mel_config(lj.vocoder.mel).sample_rate == 22050
