"""Training-time augmentation on model inputs (waveforms or log-mel frames), from the torch RNG.

Speed perturbation (tempo and pitch together) and vocal-tract-length perturbation (a warp of the
frequency axis) are the classic remedies for models that fit the voices they were trained on and
fail on new ones. Tempo perturbation (the time axis alone) is for speakers who talk faster or slower
than the training voices: on the synthetic corpus, held-out WER grows with speaking rate (16% under 12
characters per second, 50% over 16) and the fastest held-out voice's median utterance is faster than
90% of the training ones. (At 3700 quickstart steps, tempo [0.9, 1.3] left the held-out WER where it
was, 30.2%, trading the fastest utterances' errors, 50 -> 41%, for the others'; [0.8, 1.4] was worse.)
On log-mel inputs all three are applied to the cached features by interpolation, so
no audio is decoded or transformed again; on waveforms, speed perturbation resamples the audio.
Random draws use torch's global generator, whose state every checkpoint saves: resume stays exact.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from pipeline.config import AugmentConfig


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def augment_input(x: np.ndarray, cfg: AugmentConfig, sample_rate: int) -> np.ndarray:
    """A perturbed copy of one utterance's input: (samples,) waveform or (frames, bins) features."""
    speed = _uniform(*cfg.speed) if cfg.speed else 1.0
    warp = _uniform(1.0 - cfg.vtlp, 1.0 + cfg.vtlp) if cfg.vtlp else 1.0
    tempo = _uniform(*cfg.tempo) if cfg.tempo else 1.0
    if speed == 1.0 and warp == 1.0 and tempo == 1.0:
        return x
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim == 1:  # waveform: play it `speed` times faster (tempo and pitch)
        orig = int(round(sample_rate * speed / 100)) * 100
        return AF.resample(t, orig, sample_rate).numpy() if orig != sample_rate else x
    frames, bins = t.shape
    # frequency: a sound at bin k moves to bin k * speed * warp (index-linear approximation)
    scale = speed * warp
    new_frames = max(1, int(round(frames / (speed * tempo))))  # tempo: the time axis alone
    stretched_bins = max(2, int(round(bins * scale)))
    out = F.interpolate(t.T[None, None], size=(stretched_bins, new_frames), mode="bilinear", align_corners=False)[0, 0].T
    if stretched_bins >= bins:
        out = out[:, :bins]
    else:  # the top bins are empty after a downward warp: repeat the highest one
        out = torch.cat([out, out[:, -1:].expand(-1, bins - stretched_bins)], dim=1)
    return out.contiguous().numpy()
