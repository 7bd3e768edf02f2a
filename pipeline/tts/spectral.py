"""SpecGrad-style spectral prior: diffusion noise shaped like the mel's time-frequency envelope.

SpecGrad (Koizumi et al., 2022) replaces PriorGrad's per-frame noise level with a time-varying filter
L whose response follows the conditioning spectrogram: the prior is N(0, L L^T), so the noise left
after few sampling steps sits under the speech spectrum instead of spreading flat across silent bands
and pauses. Here L is zero-phase and acts in the STFT domain of the mel preset (same FFT, window
and hop): ``L y = iSTFT(M * STFT(y))`` and ``L^-1 x = iSTFT(STFT(x) / M)``, with M the linear-frequency
envelope interpolated from the amplitude mel (each band's mean magnitude, spread over its filter),
floored at `floor` times the frame's peak and at the preset's amplitude floor, and divided by the
window's norm so that L of unit white noise has the magnitudes the mel describes.

Diffusion then runs on the whitened signal y = L^-1 x (a flat-spectrum excitation: unit variance,
spiky at glottal pulses) with the standard N(0, I) process; a sample is coloured back, x = L y. Up to
the STFT's consistency (measured on the synthetic corpus: L L^-1 x is within 0.7% of x in energy) this is
SpecGrad's process; where the mel says silence, M is at the amplitude floor and so is the output.
"""

from __future__ import annotations

import torch

from pipeline.tts.mel import MelConfig, MelFrontEnd

DEFAULT_FLOOR = 1e-3  # the envelope never drops below this share of the frame's peak (-60 dB)


class SpectralShaper:
    """Whitening and colouring of waveforms by the envelope of their log-mels (one mel preset)."""

    def __init__(self, front_end: MelFrontEnd, floor: float = DEFAULT_FLOOR) -> None:
        self.front_end = front_end
        self.floor = float(floor)
        c: MelConfig = front_end.config
        fb = front_end.mel.mel_scale.fb.detach().float()  # (n_freq, n_mels)
        self.area = fb.sum(0).clamp(min=1e-12)  # a flat magnitude a gives band m the amplitude a * area[m]
        rows = fb.sum(1)
        inside = torch.nonzero(rows > 0).squeeze(1)
        # every FFT bin takes the filter-weighted mean of its bands; bins outside the filterbank, the nearest bin's
        nearest = inside[(torch.arange(fb.shape[0])[:, None] - inside[None, :]).abs().argmin(dim=1)]
        self.interp = fb[nearest] / rows[nearest, None]  # (n_freq, n_mels), rows sum to 1
        self.window = torch.hann_window(c.win_length)
        self.norm = float(self.window.pow(2).sum().sqrt())  # |STFT| of unit white noise
        self.config = c

    def envelope(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel (..., n_mels, F) -> filter magnitudes M (..., n_freq, F)."""
        amp = self.front_end.to_amplitude(mel.float().cpu())
        env = torch.matmul(self.interp, amp / self.area[:, None])
        env = torch.maximum(env, self.floor * env.amax(dim=-2, keepdim=True)).clamp(min=self.config.floor)
        return env / self.norm

    def _filter(self, x: torch.Tensor, envelope: torch.Tensor, inverse: bool) -> torch.Tensor:
        c = self.config
        spec = torch.stft(x.float().cpu(), c.n_fft, c.hop_length, c.win_length, self.window, center=True,
                          pad_mode="reflect", return_complex=True)
        frames = spec.shape[-1]
        if envelope.shape[-1] < frames:  # HiFi-GAN framing has one frame fewer than centred frames: repeat the last
            envelope = torch.cat([envelope, envelope[..., -1:].expand(*envelope.shape[:-1], frames - envelope.shape[-1])], -1)
        envelope = envelope[..., :frames]
        spec = spec / envelope if inverse else spec * envelope
        return torch.istft(spec, c.n_fft, c.hop_length, c.win_length, self.window, center=True, length=x.shape[-1])

    def whiten(self, audio: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """L^-1 x: audio (..., T) and its log-mel (..., n_mels, F) -> the flat-spectrum signal (..., T)."""
        return self._filter(audio, self.envelope(mel), inverse=True)

    def color(self, white: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """L y: a whitened signal (..., T) -> audio with the mel's envelope (..., T)."""
        return self._filter(white, self.envelope(mel), inverse=False)
