"""Objective vocoder metrics that need no pretrained network, and the Griffin-Lim floor.

- ``log_mel_l1``: mean |log-mel(ref) - log-mel(gen)| with the vocoder's own mel preset (its log base).
- ``mr_stft``: multi-resolution STFT distance, FFT 512/1024/2048 (hop FFT/4, Hann window FFT):
  the mean over resolutions of spectral convergence + mean |ln|X| - ln|Y||. 0 for identical audio.
- ``pesq``: wideband PESQ (ITU-T P.862.2, package `pesq`) at 16 kHz (other rates are resampled);
  -0.5..4.64, 4.64 for identical audio. None when PESQ finds no speech.
- ``stoi``: short-time objective intelligibility (package `pystoi`), 0..1.
- ``rtf``: real-time factor = synthesis seconds / audio seconds (< 1: faster than real time).
- ``griffin_lim``: the non-learned floor: amplitude mel -> least-squares linear spectrogram
  (`InverseMelScale`) -> 32 Griffin-Lim iterations (`GriffinLim`), from the very same mel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torchaudio.transforms as T

from pipeline.audio import resample
from pipeline.tts.mel import MelFrontEnd

MR_STFT_FFTS = (512, 1024, 2048)


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))).float().reshape(-1).cpu()


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float64).reshape(-1)


def _same_length(ref: Any, gen: Any) -> tuple[torch.Tensor, torch.Tensor]:
    r, g = _tensor(ref), _tensor(gen)
    n = min(r.numel(), g.numel())
    return r[:n], g[:n]


def log_mel_l1(ref: Any, gen: Any, front_end: MelFrontEnd) -> float:
    r, g = _same_length(ref, gen)
    with torch.no_grad():
        return float((front_end(r) - front_end(g)).abs().mean())


def mr_stft(ref: Any, gen: Any, ffts: tuple[int, ...] = MR_STFT_FFTS, eps: float = 1e-7) -> float:
    r, g = _same_length(ref, gen)
    total = 0.0
    for n_fft in ffts:
        window = torch.hann_window(n_fft)
        spec = [torch.stft(x, n_fft, hop_length=n_fft // 4, win_length=n_fft, window=window, return_complex=True).abs()
                for x in (r, g)]
        sc = torch.linalg.norm(spec[0] - spec[1]) / torch.linalg.norm(spec[0]).clamp(min=eps)
        mag = (torch.log(spec[0].clamp(min=eps)) - torch.log(spec[1].clamp(min=eps))).abs().mean()
        total += float(sc) + float(mag)
    return total / len(ffts)


def pesq_wb(ref: Any, gen: Any, sample_rate: int) -> float | None:
    from pesq import pesq

    r, g = (_numpy(x).astype(np.float32) for x in _same_length(ref, gen))
    if sample_rate != 16000:
        r, g = resample(r, sample_rate, 16000), resample(g, sample_rate, 16000)
    try:
        return float(pesq(16000, r.astype(np.float64), g.astype(np.float64), "wb"))
    except Exception:  # NoUtterancesError (silence), BufferTooShortError
        return None


def stoi(ref: Any, gen: Any, sample_rate: int) -> float | None:
    from pystoi import stoi as _stoi

    r, g = (_numpy(x) for x in _same_length(ref, gen))
    value = float(_stoi(r, g, sample_rate, extended=False))
    return value if math.isfinite(value) else None


def real_time_factor(synthesis_seconds: float, audio_seconds: float) -> float:
    return synthesis_seconds / max(audio_seconds, 1e-9)


class GriffinLim:
    """Log-mel (n_mels, frames) of `front_end`'s preset -> waveform, the floor every vocoder must beat."""

    def __init__(self, front_end: MelFrontEnd, n_iter: int = 32) -> None:
        c = front_end.config
        self.front_end = front_end
        self.inverse_mel = T.InverseMelScale(n_stft=c.n_fft // 2 + 1, n_mels=c.n_mels, sample_rate=c.sample_rate,
                                             f_min=c.f_min, f_max=c.f_max, norm="slaney", mel_scale="slaney")
        self.griffin_lim = T.GriffinLim(n_fft=c.n_fft, n_iter=n_iter, win_length=c.win_length, hop_length=c.hop_length,
                                        power=1.0)

    @torch.no_grad()
    def __call__(self, log_mel: torch.Tensor, num_samples: int | None = None, seed: int = 0) -> torch.Tensor:
        c = self.front_end.config
        linear = self.inverse_mel(self.front_end.to_amplitude(log_mel.float().cpu())).clamp(min=0.0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            audio = self.griffin_lim(linear)
        if c.framing == "hifigan":  # its frames are centred half a hop later than torch's centred frames
            audio = torch.nn.functional.pad(audio, (c.hop_length // 2, 0))
        if num_samples is not None:
            audio = torch.nn.functional.pad(audio, (0, max(0, num_samples - audio.shape[-1])))[..., :num_samples]
        return audio.clamp(-1.0, 1.0)


def all_metrics(ref: Any, gen: Any, sample_rate: int, front_end: MelFrontEnd) -> dict[str, float | None]:
    """log-mel L1, MR-STFT, PESQ and STOI of one generated signal against its reference."""
    return {"log_mel_l1": log_mel_l1(ref, gen, front_end), "mr_stft": mr_stft(ref, gen),
            "pesq": pesq_wb(ref, gen, sample_rate), "stoi": stoi(ref, gen, sample_rate)}


def mean_metrics(rows: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Per-key means over utterances, ignoring None (PESQ on silence); None when no value."""
    keys = list(rows[0]) if rows else []
    out: dict[str, float | None] = {}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else None
    return out
