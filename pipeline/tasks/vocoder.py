"""Diffusion vocoder (DiffWave, optionally with the PriorGrad prior): mel -> waveform, on any audio data spec.

Data: any data spec; text is ignored. Each utterance's log-mel is computed once over the whole
utterance (then cached in memory within `train.feature_cache_gb`), exactly as at inference, and
training runs on aligned random crops of it: a crop of n frames trains the n * hop samples under it.

Randomness and exact resume: a batch's crop length (vocoder.crop_min_samples..crop_max_samples, whole
hops) is a pure function of (seed, the batch's utterance indices), so the loop can count the batch's
units (samples) when it is collated, in any worker. Crop offsets, diffusion steps and noise are drawn in
`loss` from torch's global generator in the training process, whose state every checkpoint saves and
restores: a resumed run draws exactly what the uninterrupted one would have.

Loss: L1 (or L2) between the true and the predicted noise, summed over every sample of every crop
(units = samples); with the prior the error is whitened (divided by sigma), as in PriorGrad. With the
spectral prior (`vocoder.spectral_prior`) each utterance is whitened once when read (L^-1 x, over the whole
utterance as at inference) and the standard process and loss apply to it.

Evaluation: `vocoder.eval_utterances` held-out utterances (cut to `eval_max_seconds`) are vocoded with
the default sampler and steps and scored against the reference (log-mel L1, MR-STFT, PESQ, STOI,
real-time factor) next to Griffin-Lim from the same mels (`gl_*`). Every `sample_every`-th evaluation
writes wavs and a spectrogram PNG (reference / generated / Griffin-Lim) to output_dir/samples/eval-NNN/.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from pipeline.audio import read_audio, write_wav
from pipeline.config import Recipe
from pipeline.data.prepare import SkipReport, prepare_split
from pipeline.data.sources import describe_spec, load_spec
from pipeline.errors import DataError, ModelError, RecipeError
from pipeline.io import write_json, write_text
from pipeline.tasks.base import ModelHolder, metric_text, render_model_card
from pipeline.tts.diffwave import DiffWave, model_kwargs
from pipeline.tts.inference import SETTINGS_FILE, Vocoder, VocoderSettings
from pipeline.tts.mel import MEL_CONFIG_FILE, MelConfig, MelFrontEnd, get_mel_config, same_features
from pipeline.tts.metrics import GriffinLim, all_metrics, mean_metrics, real_time_factor
from pipeline.tts.sampling import check_sampler, expand_std, prior_std, sample, training_scheduler
from pipeline.tts.spectral import SpectralShaper

logger = logging.getLogger(__name__)

PRIOR_PERCENTILE = 99.5  # the frame energy mapped to sigma = 1 (a robust maximum over the training data)
PRIOR_UTTERANCES = 200


class VocoderTask(ModelHolder):
    name = "vocoder"
    main_metric = "log_mel_l1"

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.v = recipe.vocoder
        self._model: DiffWave | None = None
        self.report = SkipReport()
        self.mel_config: MelConfig = get_mel_config(self.v.mel)
        self._evaluations = 0
        self._gl_cache: dict[tuple[int, ...], dict[str, Any]] = {}

    # ---------------------------------------------------------------------------------------
    def setup(self, accelerator: Accelerator) -> None:
        r, d, m, v = self.recipe, self.recipe.data, self.recipe.model, self.v
        if d.train is None:
            raise RecipeError("data.train: the training audio is missing")
        check_sampler(v.sampler, v.steps)
        self.sample_rate = self.mel_config.sample_rate
        self.hop = self.mel_config.hop_length
        self.front_end = MelFrontEnd(self.mel_config)
        common = dict(normalize=lambda t: t, min_duration=d.min_duration, max_duration=d.max_duration, need_text=False,
                      on_bad_rows=d.on_bad_rows, cache_dir=d.cache_dir or _cache_dir(), num_proc=d.num_proc)
        with accelerator.main_process_first():
            self.train = prepare_split(load_spec(d.train, need_text=False), "train", describe_spec(d.train), self.report, **common)
            self.eval = None
            if d.eval is not None:
                self.eval = prepare_split(load_spec(d.eval, need_text=False), "eval", describe_spec(d.eval), self.report, **common)
        logger.info("data: %s", self.report.summary())
        self.out = Path(r.output_dir)
        if accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            self.report.write(self.out / "data_report.json")
        self.settings = VocoderSettings(sampler=v.sampler, steps=v.steps, prior=v.prior, prior_min_std=v.prior_min_std,
                                        spectral_prior=v.spectral_prior, spectral_floor=v.spectral_floor)
        self.shaper = SpectralShaper(self.front_end, v.spectral_floor) if v.spectral_prior else None
        if m.name_or_path:
            self._model = self._load_pretrained(Path(m.name_or_path))
        else:
            kwargs = model_kwargs(m.config)
            kwargs.update(n_mels=self.mel_config.n_mels, hop_length=self.hop)
            try:
                self._model = DiffWave(**kwargs)
            except TypeError as exc:
                raise RecipeError(f"model.config: {exc}") from None
        self._durations_s = [float(x) for x in self.train["duration"]]
        crop_max_s = self.v.crop_max_samples / self.sample_rate
        self._durations = [min(x, crop_max_s) for x in self._durations_s]  # what a batch actually trains on
        self._audio = self.train["audio"]
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cache_bytes = 0
        self._cache_limit = int(r.train.feature_cache_gb * 2**30)
        if v.prior and not (m.name_or_path and self.settings.prior_energy_ref != 1.0):
            self.settings.prior_energy_ref = self._energy_reference()
        self.train_scheduler = training_scheduler(self.settings.num_train_timesteps, self.settings.beta_start,
                                                  self.settings.beta_end)
        self._samples_base = len(list((self.out / "samples").glob("eval-*"))) if (self.out / "samples").is_dir() else 0
        logger.info("model: DiffWave %d layers x %d channels, %.2f M parameters; mel preset %s; sampler %s, %d steps%s",
                    self._model.config.residual_layers, self._model.config.residual_channels, self._model.num_parameters_m(),
                    self.mel_config.describe(), v.sampler, v.steps,
                    f"; PriorGrad prior (energy reference {self.settings.prior_energy_ref:.4g})" if v.prior else
                    f"; spectral prior (floor {v.spectral_floor:g})" if v.spectral_prior else "")

    def _load_pretrained(self, path: Path) -> DiffWave:
        if not (path / "config.json").is_file():
            raise ModelError(f"model.name_or_path: {path} is not a vocoder directory (no config.json)")
        if (path / MEL_CONFIG_FILE).is_file():
            saved = MelConfig.load(path)
            if not same_features(saved, self.mel_config):
                raise ModelError(f"mel mismatch: {path} was trained on preset {saved.describe()} but vocoder.mel is "
                                 f"{self.mel_config.describe()}")
        if (path / SETTINGS_FILE).is_file():
            import json

            old = VocoderSettings.from_dict(json.loads((path / SETTINGS_FILE).read_text(encoding="utf-8")))
            self.settings.prior_energy_ref = old.prior_energy_ref
            if (old.prior, old.spectral_prior) != (self.v.prior, self.v.spectral_prior):
                raise ModelError(f"model.name_or_path: {path} was trained with prior={old.prior}, spectral_prior="
                                 f"{old.spectral_prior}; the recipe says prior={self.v.prior}, spectral_prior={self.v.spectral_prior}")
        model = DiffWave.from_pretrained(str(path))
        if model.config.hop_length != self.hop or model.config.n_mels != self.mel_config.n_mels:
            raise ModelError(f"{path}: the network (hop {model.config.hop_length}, {model.config.n_mels} mels) does not fit "
                             f"mel preset {self.mel_config.describe()}")
        return model

    def _energy_reference(self) -> float:
        """PriorGrad's normaliser: a high percentile of the training frames' mel energies."""
        idx = np.linspace(0, len(self.train) - 1, min(PRIOR_UTTERANCES, len(self.train))).round().astype(int)
        energies = []
        for i in sorted(set(idx.tolist())):
            mel, _ = self._utterance(int(i), cache=False)
            energies.append(prior_std(mel, self.mel_config.log, 1.0, min_std=0.0).numpy())
        ref = float(np.percentile(np.concatenate(energies), PRIOR_PERCENTILE))
        return max(ref, 1e-6)

    def train_example(self, index: int) -> dict[str, Any]:
        return {"index": index, "audio": self._audio[index], "duration": self._durations_s[index]}

    # ---------------------------------------------------------------------------------------
    def _read(self, ref: Any) -> torch.Tensor:
        return torch.from_numpy(read_audio(ref, self.sample_rate)[0])

    def _utterance(self, index: int, ref: Any = None, cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-mel (n_mels, F), audio (F * hop,)) of a training utterance, zero-padded to whole frames.

        With the spectral prior the audio is whitened here, over the whole utterance as at inference."""
        hit = self._cache.get(index)
        if hit is not None:
            return hit
        audio = self._read(ref if ref is not None else self._audio[index])
        with torch.no_grad():
            mel = self.front_end(audio)
        frames = mel.shape[-1]
        audio = torch.nn.functional.pad(audio, (0, max(0, frames * self.hop - audio.numel())))[: frames * self.hop]
        if self.shaper is not None:
            audio = self.shaper.whiten(audio, mel)
        if cache and self._cache_bytes + (mel.numel() + audio.numel()) * 4 <= self._cache_limit:
            self._cache[index] = (mel, audio)
            self._cache_bytes += (mel.numel() + audio.numel()) * 4
        return mel, audio

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        mels, audios, indices = [], [], []
        for row in rows:
            try:
                mel, audio = self._utterance(row["index"], row["audio"])
            except DataError as exc:  # changed on disk since it was measured: skip, never crash mid-run
                logger.warning("skipping an utterance during training: %s", exc)
                continue
            mels.append(mel)
            audios.append(audio)
            indices.append(int(row["index"]))
        if not mels:
            return None
        lo = max(1, self.v.crop_min_samples // self.hop)
        hi = max(lo, self.v.crop_max_samples // self.hop)
        # the crop length depends only on (seed, which utterances): the same in every worker and after resume
        rng = np.random.default_rng([int(self.recipe.seed), *sorted(indices)])
        frames = min(int(rng.integers(lo, hi + 1)), *(m.shape[-1] for m in mels))
        samples = frames * self.hop * len(mels)
        return {"mels": mels, "audio": audios, "frames": frames, "units": samples,
                "audio_seconds": samples / self.sample_rate}

    def _std(self, mel: torch.Tensor) -> torch.Tensor | None:
        if not self.settings.prior:
            return None
        std = prior_std(mel, self.mel_config.log, self.settings.prior_energy_ref, self.settings.prior_min_std)
        return expand_std(std, self.hop)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(model.parameters()).device
        n, hop = int(batch["frames"]), self.hop
        crops_mel, crops_audio = [], []
        for mel, audio in zip(batch["mels"], batch["audio"], strict=True):
            start = int(torch.randint(0, mel.shape[-1] - n + 1, ()).item())  # global RNG: checkpointed
            crops_mel.append(mel[:, start : start + n])
            crops_audio.append(audio[start * hop : (start + n) * hop])
        mel = torch.stack(crops_mel).to(device)
        x0 = torch.stack(crops_audio).to(device)
        steps = torch.randint(0, self.settings.num_train_timesteps, (x0.shape[0],)).to(device)
        noise = torch.randn(x0.shape).to(device)
        std = self._std(mel)
        if std is not None:
            noise = noise * std
        noisy = self.train_scheduler.add_noise(x0, noise, steps)
        predicted = model(noisy, mel, steps.float()).float()
        err = predicted - noise
        if std is not None:
            err = err / std
        loss = err.abs().sum() if self.v.loss == "l1" else err.pow(2).sum()
        return loss, torch.tensor(float(batch["units"]))

    # ---------------------------------------------------------------------------------------
    def evaluate(self, accelerator: Accelerator, model: torch.nn.Module, limit: int | None = None) -> dict[str, Any]:
        if self.eval is None or self.v.eval_utterances == 0:
            return {}
        n = min(self.v.eval_utterances, len(self.eval), limit if limit is not None else len(self.eval))
        chosen = np.linspace(0, len(self.eval) - 1, n).round().astype(int).tolist()
        world, rank = accelerator.num_processes, accelerator.process_index
        mine = chosen[rank::world]
        was_training = model.training
        model.eval()
        records, shown = [], []
        max_samples = int(self.v.eval_max_seconds * self.sample_rate)
        gl = GriffinLim(self.front_end)
        for k, i in enumerate(mine):
            ref = self._read(self.eval[i]["audio"])[:max_samples]
            mel = self.front_end(ref)
            generator = torch.Generator().manual_seed(int(self.recipe.seed) + i)
            t0 = time.perf_counter()
            wave = sample(model, mel.unsqueeze(0), sampler=self.v.sampler, steps=self.v.steps, std=self._std(mel.unsqueeze(0)),
                          generator=generator, train=self.train_scheduler, fast_betas=self.settings.fast_betas,
                          shaper=self.shaper)[0].cpu()
            elapsed = time.perf_counter() - t0
            wave = wave[: ref.numel()]
            rec: dict[str, Any] = {"index": i, **all_metrics(ref, wave, self.sample_rate, self.front_end),
                                   "rtf": real_time_factor(elapsed, ref.numel() / self.sample_rate)}
            if i not in self._gl_cache:  # the floor does not change during training: compute it once
                gl_wave = gl(mel, ref.numel())
                self._gl_cache[i] = {"metrics": all_metrics(ref, gl_wave, self.sample_rate, self.front_end), "wave": gl_wave}
            rec.update({f"gl_{k2}": v2 for k2, v2 in self._gl_cache[i]["metrics"].items()})
            records.append(rec)
            if k < self.v.samples:
                shown.append((i, ref, wave, self._gl_cache[i]["wave"]))
        if was_training:
            model.train()
        if world > 1:
            records = accelerator.gather_for_metrics(records, use_gather_object=True)
        self._evaluations += 1
        if not accelerator.is_main_process:
            return {}
        if self.v.sample_every and self._evaluations % self.v.sample_every == 0 and shown:
            self._write_samples(shown)
        means = mean_metrics([{k: v for k, v in r.items() if k != "index"} for r in records])
        return {k: v for k, v in means.items() if v is not None}

    def _write_samples(self, shown: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        folder = self.out / "samples" / f"eval-{self._samples_base + self._evaluations:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, ref, wave, gl_wave in shown:
            for name, x in (("reference", ref), ("generated", wave), ("griffin_lim", gl_wave)):
                write_wav(str(folder / f"{i:05d}_{name}.wav"), x.numpy(), self.sample_rate)
        try:
            plot_spectrograms([(f"utterance {i}", [self.front_end(x).numpy() for x in (ref, wave, gl_wave)])
                               for i, ref, wave, gl_wave in shown], folder / "spectrograms.png")
        except Exception as exc:  # a plotting problem never stops training
            logger.warning("could not draw spectrograms: %s", exc)

    # ---------------------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, output_dir: Path, metrics: dict[str, Any]) -> None:
        vocoder = Vocoder(model, self.mel_config, self.settings)
        vocoder.save_pretrained(output_dir)
        meta = {"task": "vocoder", "mel_preset": self.mel_config.name, "sample_rate": self.sample_rate,
                "train_data": describe_spec(self.recipe.data.train)}
        write_json(Path(output_dir) / "speech_pipeline.json", meta)
        write_text(Path(output_dir) / "README.md", model_card(self.recipe, model, self.mel_config, self.settings, metrics, self.report))
        if self.recipe.train.push_to_hub:
            model.push_to_hub(self.recipe.train.hub_model_id or Path(output_dir).name)


def _cache_dir() -> str:
    from pipeline.evaluation.evaluate import default_cache_dir

    return default_cache_dir()


def plot_spectrograms(items: list[tuple[str, list[np.ndarray]]], path: Path) -> None:
    """One row per utterance: reference, generated and Griffin-Lim log-mels side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(items), 3, figsize=(12, 2.6 * len(items)), squeeze=False)
    for row, (title, mels) in zip(axes, items, strict=True):
        lo = min(float(m.min()) for m in mels)
        hi = max(float(m.max()) for m in mels)
        for ax, mel, name in zip(row, mels, ("reference", "generated", "Griffin-Lim"), strict=True):
            ax.imshow(mel, origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
            ax.set_title(f"{title}: {name}", fontsize=9)
            ax.set_xlabel("frame")
            ax.set_ylabel("mel bin")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


def model_card(recipe: Recipe, model: torch.nn.Module, mel: MelConfig, settings: VocoderSettings, metrics: dict[str, Any],
               report: SkipReport) -> str:
    def fmt(key: str) -> str:
        return metric_text(metrics, key)

    c = model.config
    n = sum(p.numel() for p in model.parameters()) / 1e6
    body = [
        f"A DiffWave diffusion vocoder ({c.residual_layers} layers x {c.residual_channels} channels, {n:.2f} M parameters"
        f"{', PriorGrad prior' if settings.prior else ''}{', spectral prior' if settings.spectral_prior else ''}) trained with speech-pipeline. {recipe.description}".strip(), "",
        f"- mel preset: {mel.describe()} (`mel_config.json`; other mels are refused)",
        f"- sampling: {settings.sampler}, {settings.steps} steps (training schedule: T={settings.num_train_timesteps}, "
        f"beta {settings.beta_start:g}-{settings.beta_end:g} linear)",
        f"- data: `{describe_spec(recipe.data.train) if recipe.data.train else '-'}`; {report.summary()}", "",
        "## Results (held-out copy synthesis)", "",
        "| | log-mel L1 | MR-STFT | PESQ (wb) | STOI | RTF |", "|---|---|---|---|---|---|",
        f"| this vocoder | {fmt('eval_log_mel_l1')} | {fmt('eval_mr_stft')} | {fmt('eval_pesq')} | {fmt('eval_stoi')} | {fmt('eval_rtf')} |",
        f"| Griffin-Lim (32 it.) | {fmt('eval_gl_log_mel_l1')} | {fmt('eval_gl_mr_stft')} | {fmt('eval_gl_pesq')} | {fmt('eval_gl_stoi')} | - |",
        "",
    ]
    usage = ["```python", "from pipeline.tts import Vocoder", "", f'voc = Vocoder.from_pretrained("{recipe.output_dir}")',
             "wave = voc(mel)  # mel: (80, frames) log-mel made with the preset above", "```", "",
             "or `python scripts/vocode.py --model DIR --output OUT AUDIO...` (copy synthesis).", ""]
    return render_model_card(recipe, ["tags: [vocoder, diffwave, speech-pipeline]"], body, metrics, usage)
