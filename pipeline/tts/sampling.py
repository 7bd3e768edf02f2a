"""Noise schedules and samplers for the diffusion vocoder.

Training uses DiffWave's schedule: T = 50 steps, beta linear 1e-4 -> 0.05, as a diffusers
`DDPMScheduler` (``clip_sample=False``: audio is not an image). Sampling offers, by name:

- ``fast``: DiffWave's fast schedule (Kong et al. 2021, section 4 / appendix B): a short beta
  schedule (default [1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5]) whose cumulative noise levels are aligned
  to the training ones, giving *non-integer* training steps t_s = t + (sqrt(abar_t) - sqrt(gbar_s)) /
  (sqrt(abar_t) - sqrt(abar_{t+1})); ancestral updates with the short schedule. With
  ``steps == 50`` it is plain DDPM over the training schedule.
- ``ddim``: `DDIMScheduler` (eta 0, "trailing" timesteps: the first step is the last training step).
- ``dpm``: `DPMSolverMultistepScheduler` (DPM-Solver++ order 2, "trailing" timesteps).
- ``ddpm``: `DDPMScheduler` ancestral sampling (50 steps is the reference).

PriorGrad (Lee et al. 2022): with a data-dependent prior the noise is N(0, diag(sigma^2)), sigma from
the frame energy of the mel (`prior_std`). Every sampler then runs in whitened coordinates
y = x / sigma, where the process is the standard one, and the network (which sees x and predicts the
scaled noise sigma * z) is divided by sigma; the result is x = sigma * y. So any diffusers
scheduler works unchanged with the prior.

SpecGrad-style spectral prior (`pipeline.tts.spectral`): the network was trained on whitened audio
y = L^-1 x, so every sampler runs the standard process and the sample is coloured at the end, x = L y.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from pipeline.errors import ModelError
from pipeline.tts.diffwave import Workspace
from pipeline.tts.spectral import SpectralShaper

SAMPLERS = ("fast", "ddim", "dpm", "ddpm")
TRAIN_STEPS = 50
BETA_START, BETA_END = 1e-4, 0.05
FAST_BETAS = (1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5)


def training_scheduler(num_train_timesteps: int = TRAIN_STEPS, beta_start: float = BETA_START,
                       beta_end: float = BETA_END) -> DDPMScheduler:
    """DiffWave's training noise schedule."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear", beta_start=beta_start,
                         beta_end=beta_end, clip_sample=False)


def fast_steps(train_alphas_cumprod: Sequence[float] | torch.Tensor, betas: Sequence[float]) -> list[float]:
    """Non-integer training steps (0-based, as diffusers counts) matching each fast step's noise level."""
    talpha = np.asarray(train_alphas_cumprod, dtype=np.float64)
    gamma = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
    out = []
    for g in gamma:
        if g >= talpha[0]:
            out.append(0.0)
            continue
        if g <= talpha[-1]:
            out.append(float(len(talpha) - 1))
            continue
        t = int(np.nonzero(talpha >= g)[0][-1])  # talpha[t] >= g > talpha[t + 1]
        twiddle = (talpha[t] ** 0.5 - g**0.5) / (talpha[t] ** 0.5 - talpha[t + 1] ** 0.5)
        out.append(t + float(twiddle))
    return out


def prior_std(mel: torch.Tensor, log: str, energy_ref: float, min_std: float = 0.1) -> torch.Tensor:
    """PriorGrad's per-frame standard deviation: normalised frame energy of the mel, in [min_std, 1].

    mel: (..., n_mels, frames) log-mel (`log` "log10" or "ln"); energy = RMS of the amplitude mel over
    bins, divided by `energy_ref` (a high percentile of the training data's frame energies).
    """
    amp = torch.pow(10.0, mel.float()) if log == "log10" else torch.exp(mel.float())
    energy = amp.pow(2).mean(dim=-2).sqrt()
    return (energy / energy_ref).clamp(min=min_std, max=1.0)


def expand_std(std: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Frame-rate sigma (..., frames) -> sample-rate sigma (..., frames * hop)."""
    return std.repeat_interleave(hop_length, dim=-1)


def _scheduler(sampler: str, train: DDPMScheduler) -> Any:
    if sampler == "ddim":
        return DDIMScheduler.from_config(train.config, timestep_spacing="trailing")
    if sampler == "dpm":
        return DPMSolverMultistepScheduler.from_config(train.config, timestep_spacing="trailing")
    if sampler == "ddpm":
        return DDPMScheduler.from_config(train.config, timestep_spacing="trailing")
    raise ModelError(f"unknown sampler {sampler!r} (available: {', '.join(SAMPLERS)})")


def check_sampler(sampler: str, steps: int, fast_betas: Sequence[float] = FAST_BETAS, train_steps: int = TRAIN_STEPS) -> None:
    if sampler not in SAMPLERS:
        raise ModelError(f"unknown sampler {sampler!r} (available: {', '.join(SAMPLERS)})")
    if not 1 <= steps <= train_steps:
        raise ModelError(f"sampler {sampler}: steps must be 1..{train_steps}, got {steps}")
    if sampler == "fast" and steps not in (len(fast_betas), train_steps):
        raise ModelError(f"sampler fast: its schedule has {len(fast_betas)} steps (or {train_steps}: full DDPM); "
                         f"got {steps}: use sampler ddim or dpm for other step counts")


@torch.inference_mode()
def sample(
    model: torch.nn.Module,
    mel: torch.Tensor,
    *,
    sampler: str = "fast",
    steps: int = 6,
    std: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    train: DDPMScheduler | None = None,
    fast_betas: Sequence[float] = FAST_BETAS,
    shaper: SpectralShaper | None = None,
    conditioning_mb: float = 512.0,
) -> torch.Tensor:
    """Waveforms (B, frames * hop) in [-1, 1] from log-mels (B, n_mels, frames).

    `std`: PriorGrad sigma at the sample rate (B, frames * hop), or None for the standard N(0, I) prior.
    `shaper`: the spectral prior the network was trained with (then `std` must be None).
    `generator`: a CPU generator for every random draw (reproducible sampling).
    `conditioning_mb`: memory for each layer's conditioning, computed at the first step and kept for the others
    (`diffwave.Workspace`; 0 recomputes it at every step, the result is the same).
    """
    train = train or training_scheduler()
    num_train = int(train.config.num_train_timesteps)
    if shaper is not None and std is not None:
        raise ModelError("sample: the spectral prior and the PriorGrad prior exclude each other")
    check_sampler(sampler, steps, fast_betas, num_train)
    if mel.dim() == 2:
        mel = mel.unsqueeze(0)
    device = next(model.parameters()).device
    mel = mel.to(device, torch.float32)
    hop = int(model.config.hop_length)
    shape = (mel.shape[0], mel.shape[-1] * hop)
    sigma = torch.ones(shape, device=device) if std is None else std.to(device, torch.float32).expand(shape)
    upsampled = model.upsample(mel)
    workspace = Workspace(conditioning_mb)

    def randn() -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device)

    def eps(y: torch.Tensor, t: float | int) -> torch.Tensor:
        step = torch.full((shape[0],), float(t), device=device)
        return model(sigma * y, None, step, upsampled=upsampled, workspace=workspace) / sigma

    y = randn()
    if sampler == "fast":
        if steps == num_train:
            betas = train.betas.double().numpy()
            ts = [float(i) for i in range(num_train)]
        else:
            betas = np.asarray(fast_betas, dtype=np.float64)
            ts = fast_steps(train.alphas_cumprod.double().numpy(), betas)
        alphas = 1.0 - betas
        gbar = np.cumprod(alphas)
        for n in range(len(betas) - 1, -1, -1):
            z = eps(y, ts[n])
            y = (y - float(betas[n] / (1.0 - gbar[n]) ** 0.5) * z) / float(alphas[n] ** 0.5)
            if n > 0:
                y = y + float(((1.0 - gbar[n - 1]) / (1.0 - gbar[n]) * betas[n]) ** 0.5) * randn()
    else:
        scheduler = _scheduler(sampler, train)
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            z = eps(y, int(t))
            if sampler == "ddpm":
                y = scheduler.step(z, t, y, generator=generator).prev_sample
            else:
                y = scheduler.step(z, t, y).prev_sample
    if shaper is not None:
        return shaper.color(y.cpu(), mel.cpu()).to(device).clamp(-1.0, 1.0)
    return (sigma * y).clamp(-1.0, 1.0)
