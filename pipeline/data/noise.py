"""Additive noise and reverberation on training waveforms.

A model that heard only clean, dry audio fails on recordings made in rooms, through cheap microphones,
with a fan running. Real noise (MUSAN, your own room tone) and real room impulse responses come as a data
spec (a folder of audio files, a manifest, a Hub dataset), measured and filtered once like any split.
`synthetic` needs no data: coloured Gaussian noise (power spectrum 1/f^beta, beta drawn in [0, 2]: white
to brown), and the statistical room model's impulse response, a direct path followed by Gaussian noise
that decays exponentially (reverberation time drawn from `reverb_rt60`). Draws come from torch's global
generator, which the training loop seeds with each batch's identity while collating it: a batch is corrupted
the same way in any worker process and in a resumed run.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import datasets
import numpy as np
import torch
import torchaudio.functional as AF

from pipeline.audio import describe, read_audio, read_frames, resample
from pipeline.config import AugmentConfig, DataSpec
from pipeline.data.augment import uniform
from pipeline.data.prepare import SkipReport, prepare_split
from pipeline.data.sources import describe_spec, load_spec
from pipeline.errors import DataError

logger = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
DRR_DB = (0.0, 12.0)  # direct-to-reverberant energy ratio of synthetic rooms, drawn uniformly (dB)
ONSET_SECONDS = 0.002  # synthetic rooms: first reflection after the direct path
RIR_CACHE_BYTES = 256 * 2**20  # measured impulse responses kept in memory once read


def _index(n: int) -> int:
    return int(torch.randint(0, n, ()).item())


class Recordings:
    """Measured audio files (the rows `prepare_split` kept) to draw noise windows or impulse responses from."""

    def __init__(self, table: datasets.Dataset, sample_rate: int) -> None:
        self.audio = list(table["audio"])
        self.frames = [max(1, int(round(d * r))) for d, r in zip(table["duration"], table["sample_rate"], strict=True)]
        self.rates = [int(r) for r in table["sample_rate"]]
        self.sample_rate = sample_rate
        self._whole: dict[int, np.ndarray] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.audio)

    def window(self, samples: int) -> np.ndarray:
        """`samples` consecutive samples (at the model's rate) from a random place of a random file, looped if short."""
        i = _index(len(self))
        rate, frames = self.rates[i], self.frames[i]
        need = int(math.ceil(samples * rate / self.sample_rate)) + 1
        start = _index(frames - need + 1) if frames > need else 0
        x = resample(read_frames(self.audio[i], start, min(start + need, frames)), rate, self.sample_rate)
        if x.size < samples:
            x = np.tile(x, -(-samples // x.size))
        return x[:samples]

    def impulse_response(self) -> np.ndarray:
        """A random file whole, from its strongest sample on (the direct path: no delay), at unit energy."""
        i = _index(len(self))
        if i in self._whole:
            return self._whole[i]
        h = read_audio(self.audio[i], self.sample_rate)[0]
        h = h[int(np.argmax(np.abs(h))):].astype(np.float64)
        energy = float(np.sum(h**2))
        if energy <= 0:
            raise DataError(f"{describe(self.audio[i])}: an impulse response of silence")
        h = (h / math.sqrt(energy)).astype(np.float32)
        if self._cached_bytes + h.nbytes <= RIR_CACHE_BYTES:  # simulated sets hold tens of thousands: keep some
            self._whole[i] = h
            self._cached_bytes += h.nbytes
        return h


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b >= n: FFTs of such sizes run several times faster than of n itself."""
    best = 1 << max(n - 1, 0).bit_length()
    power3 = 1
    while power3 < best:
        size = power3
        while size < n:
            size *= 2
        best, power3 = min(best, size), power3 * 3
    return best


def reverberate(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The first len(x) samples of x convolved with h. (`torchaudio.functional.fftconvolve` transforms at the
    full length x + h - 1, whatever its factors: 5-8x slower on 0.5-3 s utterances.)"""
    n = x.numel()
    h = h[:n]
    size = _fast_length(n + h.numel() - 1)
    return torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(h, size), size)[:n]


def colored_noise(samples: int, beta: float) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as 1/f^beta (0 white, 1 pink, 2 brown), unit variance.

    Shaped at a length with small factors (a fast FFT) and cut: a window of stationary noise is as good.
    """
    size = _fast_length(max(samples, 2))
    spectrum = torch.fft.rfft(torch.randn(size))
    freqs = torch.fft.rfftfreq(size)
    freqs[0] = freqs[1]
    x = torch.fft.irfft(spectrum * freqs ** (-beta / 2), n=size)[:samples].double()
    x = x - x.mean()
    return (x / x.std().clamp_min(1e-12) if samples > 1 else x).to(torch.float32).numpy()


def synthetic_rir(rt60: float, sample_rate: int, drr_db: float) -> np.ndarray:
    """The statistical room model: a unit direct path, then Gaussian noise decaying 60 dB over `rt60` seconds,
    scaled so the direct path carries `drr_db` more energy than the tail; unit energy overall."""
    onset = max(1, int(round(ONSET_SECONDS * sample_rate)))
    n = max(onset + 1, int(round(rt60 * sample_rate)))
    t = torch.arange(n - onset, dtype=torch.float64) / sample_rate
    tail = torch.randn(n - onset, dtype=torch.float64) * 10 ** (-3 * t / rt60)
    tail = tail * math.sqrt(10 ** (-drr_db / 10) / float(torch.sum(tail**2)))
    h = torch.zeros(n, dtype=torch.float64)
    h[0] = 1.0
    h[onset:] = tail
    return (h / torch.linalg.vector_norm(h)).to(torch.float32).numpy()


class Corruptor:
    """Reverberation, then noise, each with its own probability, on one utterance's waveform."""

    def __init__(self, cfg: AugmentConfig, sample_rate: int, noise: Recordings | None = None,
                 rirs: Recordings | None = None) -> None:
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.noise, self.rirs = noise, rirs
        self.active = bool((cfg.noise and cfg.noise_prob > 0) or (cfg.reverb and cfg.reverb_prob > 0))

    def draw(self) -> tuple[bool, bool]:
        """Whether the next utterance gets reverberation and noise (two draws, always both: a fixed RNG use)."""
        reverb, noise = float(torch.rand(())), float(torch.rand(()))
        return (bool(self.cfg.reverb) and reverb < self.cfg.reverb_prob, bool(self.cfg.noise) and noise < self.cfg.noise_prob)

    def __call__(self, audio: np.ndarray, reverb: bool, noise: bool) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        if reverb and x.numel() > 1:
            if self.rirs is not None:
                h = torch.from_numpy(self.rirs.impulse_response())
            else:
                h = torch.from_numpy(synthetic_rir(uniform(*self.cfg.reverb_rt60), self.sample_rate, uniform(*DRR_DB)))
            dry = float(x.pow(2).mean())
            x = reverberate(x, h)  # the same length: labels and speech spans still fit
            wet = float(x.pow(2).mean())
            if wet > 0:
                x = x * math.sqrt(dry / wet)  # the level of the dry utterance
        if noise:
            n = (self.noise.window(x.numel()) if self.noise is not None
                 else colored_noise(x.numel(), uniform(0.0, 2.0)))
            snr = uniform(*self.cfg.noise_snr)
            if float(np.mean(n.astype(np.float64) ** 2)) > 1e-12 and float(x.pow(2).mean()) > 0:
                x = AF.add_noise(x[None], torch.from_numpy(n)[None], torch.tensor([snr]))[0]
        return x.numpy()

    def maybe(self, audio: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """A training utterance's draw: None when it stays clean (its cached input serves), else its audio read
        again at the model's rate, clean and corrupted."""
        reverb, noise = self.draw() if self.active else (False, False)
        if not (reverb or noise):
            return None
        clean = read_audio(audio, self.sample_rate)[0]
        return clean, self(clean, reverb, noise)


def training_corruptor(cfg: AugmentConfig, sample_rate: int, report: SkipReport, settings: dict[str, Any]) -> Corruptor:
    """The corruptor of a training recipe's `data.augment.noise` / `reverb`, their recordings measured once."""
    noise, rirs = (load_recordings(getattr(cfg, key), key, report, sample_rate, settings, where=f"data.augment.{key}")
                   for key in ("noise", "reverb"))
    return Corruptor(cfg, sample_rate, noise=noise, rirs=rirs)


def load_recordings(spec: DataSpec | None, split: str, report: SkipReport, sample_rate: int,
                    settings: dict[str, Any], where: str) -> Recordings | None:
    """The noise or impulse-response files of `spec` (None for none or `synthetic`): measured once and cached like
    any split, unusable ones skipped and listed in `report` under `split`. `settings`: `prepare_split`'s keywords;
    `where`: the option that named the spec, for error messages."""
    if spec is None or spec.path == SYNTHETIC:
        return None
    try:
        table = prepare_split(load_spec(spec, need_text=False), split, describe_spec(spec), report,
                              **{**settings, "min_duration": 0.0, "max_duration": float("inf"), "need_text": False})
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    logger.info("%s: %d recordings, %.1f minutes", where, len(table), sum(table["duration"]) / 60)
    return Recordings(table, sample_rate)
