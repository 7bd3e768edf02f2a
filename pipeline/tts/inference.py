"""A trained vocoder as one object: the DiffWave network, its mel preset and its sampling settings.

A vocoder directory (written by the `vocoder` task or `Vocoder.save_pretrained`) holds:

- ``config.json`` + ``diffusion_pytorch_model.safetensors``: the network (diffusers `save_pretrained`);
- ``mel_config.json``: the mel preset its training mels were made with (checked on every call);
- ``vocoder.json``: noise schedule, default sampler and steps, the prior's settings (PriorGrad or spectral).

Usage::

    voc = Vocoder.from_pretrained("runs/vocoder_quickstart")
    mel = voc.mel(audio)                       # (80, frames) with the vocoder's own preset
    wave = voc(mel, mel_config="speecht5")     # (frames * hop,) float32 at voc.sample_rate
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import ModelError
from pipeline.tts.diffwave import DiffWave
from pipeline.tts.mel import MelConfig, MelFrontEnd, check_compatible
from pipeline.tts.sampling import (
    BETA_END,
    BETA_START,
    FAST_BETAS,
    TRAIN_STEPS,
    check_sampler,
    expand_std,
    prior_std,
    sample,
    training_scheduler,
)
from pipeline.tts.spectral import DEFAULT_FLOOR, SpectralShaper

SETTINGS_FILE = "vocoder.json"


@dataclass
class VocoderSettings:
    sampler: str = "fast"
    steps: int = 6
    num_train_timesteps: int = TRAIN_STEPS
    beta_start: float = BETA_START
    beta_end: float = BETA_END
    fast_betas: list[float] = field(default_factory=lambda: list(FAST_BETAS))
    prior: bool = False  # PriorGrad data-dependent prior
    prior_energy_ref: float = 1.0  # frame energy that maps to sigma = 1
    prior_min_std: float = 0.1
    spectral_prior: bool = False  # SpecGrad-style noise shaped by the mel's envelope (pipeline.tts.spectral)
    spectral_floor: float = DEFAULT_FLOOR

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VocoderSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


class Vocoder:
    def __init__(self, model: DiffWave, mel_config: MelConfig, settings: VocoderSettings | None = None) -> None:
        self.model = model
        self.mel_config = mel_config
        self.settings = settings or VocoderSettings()
        self.front_end = MelFrontEnd(mel_config)
        self.shaper = SpectralShaper(self.front_end, self.settings.spectral_floor) if self.settings.spectral_prior else None
        self.train_scheduler = training_scheduler(self.settings.num_train_timesteps, self.settings.beta_start,
                                                  self.settings.beta_end)
        if model.config.hop_length != mel_config.hop_length or model.config.n_mels != mel_config.n_mels:
            raise ModelError(f"vocoder: the network (hop {model.config.hop_length}, {model.config.n_mels} mels) does not fit "
                             f"mel preset {mel_config.describe()}")

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    # -------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> Vocoder:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a vocoder directory (no config.json)")
        settings_path = path / SETTINGS_FILE
        if not settings_path.is_file():
            raise ModelError(f"{path}: no {SETTINGS_FILE} (not a vocoder saved by this toolkit?)")
        settings = VocoderSettings.from_dict(json.loads(settings_path.read_text(encoding="utf-8")))
        model = DiffWave.from_pretrained(str(path)).to(device).eval()
        return cls(model, MelConfig.load(path), settings)

    def save_pretrained(self, path: str | Path) -> None:
        from pipeline.io import write_json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path), safe_serialization=True)
        self.mel_config.save(path)
        write_json(path / SETTINGS_FILE, dataclasses.asdict(self.settings))

    # -------------------------------------------------------------------------------------
    def mel(self, audio: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Log-mel (n_mels, frames) of audio at `sample_rate`, with the vocoder's preset."""
        x = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not isinstance(audio, torch.Tensor) else audio)
        with torch.no_grad():
            return self.front_end(x.float().cpu())

    def prior(self, mel: torch.Tensor) -> torch.Tensor | None:
        """PriorGrad sigma at the sample rate for mels (B, n_mels, frames), or None without the prior."""
        s = self.settings
        if not s.prior:
            return None
        std = prior_std(mel, self.mel_config.log, s.prior_energy_ref, s.prior_min_std)
        return expand_std(std, self.mel_config.hop_length)

    def __call__(self, mel: torch.Tensor, *, mel_config: MelConfig | str | dict[str, Any] | None = None,
                 sampler: str | None = None, steps: int | None = None, seed: int | None = 0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Waveform(s) from log-mel(s): (n_mels, F) -> (F * hop,), (B, n_mels, F) -> (B, F * hop).

        `mel_config`: how the mels were made (a preset name or config); refused when it differs from
        the vocoder's. The tensor itself is always checked (bins, values below the log floor).
        """
        check_compatible(mel_config, self.mel_config, mel)
        sampler = sampler or self.settings.sampler
        steps = int(steps or self.settings.steps)
        check_sampler(sampler, steps, self.settings.fast_betas, self.settings.num_train_timesteps)
        single = mel.dim() == 2
        batch = (mel.unsqueeze(0) if single else mel).float()
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        audio = sample(self.model, batch, sampler=sampler, steps=steps, std=self.prior(batch), generator=generator,
                       train=self.train_scheduler, fast_betas=self.settings.fast_betas, shaper=self.shaper)
        audio = audio.cpu()
        return audio[0] if single else audio

    def copy_synthesis(self, audio: np.ndarray, **kwargs: Any) -> np.ndarray:
        """Audio at `sample_rate` -> mel -> audio of the same length (for evaluation and demos)."""
        wave = self(self.mel(audio), **kwargs)
        n = len(audio)
        wave = torch.nn.functional.pad(wave, (0, max(0, n - wave.shape[-1])))[:n]
        return wave.numpy().astype(np.float32)
