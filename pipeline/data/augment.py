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
Random draws use torch's global generator, which the training loop seeds with each batch's identity while
collating it: the same draws in any worker process and after a resume.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from pipeline.config import AugmentConfig


def uniform(low: float, high: float) -> float:
    """A draw from U(low, high) off torch's global generator (seeded per batch by the loop: resume stays exact)."""
    return low + (high - low) * float(torch.rand(()))


def trim_to_span(x: np.ndarray, span: tuple[int, int], standardized: bool) -> np.ndarray:
    """`x[start:end]` (frames or samples), standardised again if the extractor standardises its output.

    Re-standardising the cut is what the extractor would compute on the cut audio: standardisation is
    affine, so standardising already-standardised frames over a subset equals standardising the raw ones.
    """
    start, end = span
    if end - start < 2 or (start == 0 and end >= len(x)):
        return x
    out = x[start:end]
    if standardized:
        out = (out - out.mean(axis=0)) / (out.std(axis=0, ddof=1) + 1e-5)
    return np.ascontiguousarray(out, dtype=x.dtype)


def augment_input(x: np.ndarray, cfg: AugmentConfig, sample_rate: int, speech: tuple[int, int] | None = None,
                  standardized: bool = True) -> np.ndarray:
    """A perturbed copy of one utterance's input: (samples,) waveform or (frames, bins) features.

    `speech` is the utterance's loud span in the same units as `x`'s first axis, for `cfg.trim`.
    """
    if cfg.trim and speech is not None and float(torch.rand(())) < cfg.trim:
        x = trim_to_span(x, speech, standardized)
    speed = uniform(*cfg.speed) if cfg.speed else 1.0
    warp = uniform(1.0 - cfg.vtlp, 1.0 + cfg.vtlp) if cfg.vtlp else 1.0
    tempo = uniform(*cfg.tempo) if cfg.tempo else 1.0
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
