"""Log-mel front-ends for vocoders, as named presets that travel with a trained model.

A vocoder only works on mels made exactly the way its training mels were made: same sample rate,
FFT, hop, filterbank, magnitude (amplitude, not power), log base and floor. The presets here
follow the conventions of the acoustic models a vocoder sits behind:

- ``speecht5``: 16 kHz, n_fft/win 1024, hop 256, 80 Slaney mels 80-7600 Hz, log10(max(mel, 1e-10)),
  centred frames (``transformers`` SpeechT5FeatureExtractor / SpeechT5HifiGan).
- ``ljspeech`` (alias ``hifigan``): 22.05 kHz, n_fft/win 1024, hop 256, 80 Slaney mels 0-8000 Hz,
  ln(max(mel, 1e-5)), HiFi-GAN framing (reflect padding of (n_fft - hop) / 2, no centring), so a
  signal of ``k * hop`` samples has exactly ``k`` frames.

``MelFrontEnd(config)(audio)`` maps a 1-D signal to ``(n_mels, frames)`` (a batch ``(B, T)`` to
``(B, n_mels, frames)``). The preset is saved next to the vocoder (``mel_config.json``) and
``check_compatible`` refuses mels described by another preset with one line that names both.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torchaudio.transforms as T

from pipeline.errors import ModelError

MEL_CONFIG_FILE = "mel_config.json"


@dataclass(frozen=True)
class MelConfig:
    name: str
    sample_rate: int
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    log: Literal["log10", "ln"] = "ln"
    floor: float = 1e-5  # amplitude mel is clamped to at least this before the log
    framing: Literal["center", "hifigan"] = "center"  # torch centring, or HiFi-GAN's (n_fft-hop)/2 reflect pad

    # -------------------------------------------------------------------------------------
    @property
    def log_floor(self) -> float:
        """The smallest value a log-mel of this preset can take (silence)."""
        return math.log10(self.floor) if self.log == "log10" else math.log(self.floor)

    def frames(self, num_samples: int) -> int:
        """Number of mel frames for a signal of `num_samples` samples."""
        if self.framing == "center":
            return 1 + num_samples // self.hop_length
        pad = (self.n_fft - self.hop_length) // 2
        return max(0, (num_samples + 2 * pad - self.n_fft) // self.hop_length + 1)

    def describe(self) -> str:
        return (f"'{self.name}' ({self.sample_rate} Hz, n_fft {self.n_fft}, hop {self.hop_length}, {self.n_mels} mels "
                f"{self.f_min:g}-{self.f_max:g} Hz, {self.log})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise ModelError(f"mel config: unknown keys {', '.join(sorted(unknown))}")
        return cls(**raw)

    def save(self, directory: str | Path) -> None:
        from pipeline.io import write_json

        write_json(Path(directory) / MEL_CONFIG_FILE, self.to_dict())

    @classmethod
    def load(cls, directory: str | Path) -> MelConfig:
        path = Path(directory) / MEL_CONFIG_FILE
        if not path.is_file():
            raise ModelError(f"{directory}: no {MEL_CONFIG_FILE} (not a vocoder saved by this toolkit?)")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


PRESETS: dict[str, MelConfig] = {
    "speecht5": MelConfig(name="speecht5", sample_rate=16000, f_min=80.0, f_max=7600.0, log="log10", floor=1e-10,
                          framing="center"),
    "ljspeech": MelConfig(name="ljspeech", sample_rate=22050, f_min=0.0, f_max=8000.0, log="ln", floor=1e-5,
                          framing="hifigan"),
}
PRESETS["hifigan"] = dataclasses.replace(PRESETS["ljspeech"], name="hifigan")


def get_mel_config(preset: str | dict[str, Any] | MelConfig) -> MelConfig:
    """A preset by name, a full config mapping, or a config (returned as is)."""
    if isinstance(preset, MelConfig):
        return preset
    if isinstance(preset, dict):
        return MelConfig.from_dict(preset)
    if preset not in PRESETS:
        raise ModelError(f"unknown mel preset {preset!r} (available: {', '.join(PRESETS)})")
    return PRESETS[preset]


_COMPARED = ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "f_min", "f_max", "log", "floor", "framing")


def same_features(a: MelConfig, b: MelConfig) -> bool:
    """True when two configs produce identical mels (the name does not matter: hifigan == ljspeech)."""
    return all(getattr(a, k) == getattr(b, k) for k in _COMPARED)


def check_compatible(given: MelConfig | str | dict[str, Any] | None, expected: MelConfig, mel: torch.Tensor | None = None) -> None:
    """Refuse mels the vocoder was not trained on, with one line naming both presets.

    `given` describes how the mels were made (None: unknown, only the tensor is checked). The tensor
    check catches the common silent mismatches: another number of bins, and values below the
    vocoder's log floor (another log base or floor, or normalised mels).
    """
    if given is not None:
        g = get_mel_config(given)
        if not same_features(g, expected):
            diff = ", ".join(f"{k} {getattr(g, k)} vs {getattr(expected, k)}" for k in _COMPARED if getattr(g, k) != getattr(expected, k))
            raise ModelError(f"mel mismatch: the mels come from preset {g.describe()} but this vocoder was trained on "
                             f"{expected.describe()} ({diff})")
    if mel is not None:
        if mel.dim() not in (2, 3) or mel.shape[-2] != expected.n_mels:
            raise ModelError(f"mel mismatch: got a tensor of shape {tuple(mel.shape)}, but this vocoder expects "
                             f"(n_mels={expected.n_mels}, frames) mels of preset {expected.describe()}")
        low = float(mel.min()) if mel.numel() else 0.0
        if low < expected.log_floor - 1e-3 * max(1.0, abs(expected.log_floor)):
            raise ModelError(f"mel mismatch: values go down to {low:.2f}, below the floor {expected.log_floor:.2f} of "
                             f"preset {expected.describe()}: these mels use another log base, floor or normalisation")


class MelFrontEnd(torch.nn.Module):
    """Audio (T,) or (B, T) at the preset's sample rate -> log-mel (n_mels, frames) or (B, n_mels, frames)."""

    def __init__(self, config: MelConfig | str) -> None:
        super().__init__()
        self.config = c = get_mel_config(config)
        self.mel = T.MelSpectrogram(
            sample_rate=c.sample_rate, n_fft=c.n_fft, win_length=c.win_length, hop_length=c.hop_length,
            f_min=c.f_min, f_max=c.f_max, n_mels=c.n_mels, power=1.0, norm="slaney", mel_scale="slaney",
            center=c.framing == "center", pad_mode="reflect",
        )

    def amplitude(self, audio: torch.Tensor) -> torch.Tensor:
        """Amplitude mel (before the log)."""
        c = self.config
        x = audio.float()
        if c.framing == "hifigan":
            pad = (c.n_fft - c.hop_length) // 2
            squeeze = x.dim() == 1
            x = torch.nn.functional.pad(x.unsqueeze(0) if squeeze else x.unsqueeze(1), (pad, pad), mode="reflect")
            x = x.squeeze(0) if squeeze else x.squeeze(1)
        return self.mel(x)

    def log(self, amplitude: torch.Tensor) -> torch.Tensor:
        x = amplitude.clamp(min=self.config.floor)
        return torch.log10(x) if self.config.log == "log10" else torch.log(x)

    def to_amplitude(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Inverse of the log (the floor stays)."""
        return torch.pow(10.0, log_mel) if self.config.log == "log10" else torch.exp(log_mel)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.log(self.amplitude(audio))
