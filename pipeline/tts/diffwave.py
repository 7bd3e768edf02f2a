"""DiffWave (Kong et al., 2021): a non-autoregressive WaveNet-like noise predictor conditioned on log-mels.

The network maps (noisy audio x_t, log-mel, diffusion step t) to the noise in x_t. Steps may be
non-integer: the step embedding is the sinusoid of the (float) step itself, so the fast 6-step
schedule, whose noise levels fall between training steps, needs no table look-up.

Parameters live in `register_to_config`, so `save_pretrained` / `from_pretrained` (diffusers,
safetensors) round-trip a model exactly. `PRESETS` lists the sizes; ``base`` is the paper's 2.6 M
model, ``small`` (0.53 M) the CPU default (see recipes/tts/README.md for measured real-time factors).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from pipeline.errors import ModelError

PRESETS: dict[str, dict[str, Any]] = {
    # the paper's BASE model: 30 layers, 64 channels, dilation 2^(i mod 10); 2.62 M parameters at 80 mels
    "base": {"residual_layers": 30, "residual_channels": 64, "dilation_cycle": 10},
    # the CPU default: 0.53 M parameters, about 4.5x faster than base per step; 6 steps run faster than
    # real time on 2 CPU cores at 22.05 kHz (measured: recipes/tts/README.md)
    "small": {"residual_layers": 20, "residual_channels": 32, "dilation_cycle": 10, "step_hidden_dim": 256},
    # tests and smoke runs
    "tiny": {"residual_layers": 4, "residual_channels": 16, "dilation_cycle": 4, "step_embedding_dim": 32,
             "step_hidden_dim": 64},
}


def model_kwargs(config: dict[str, Any] | None) -> dict[str, Any]:
    """`{"preset": "small", "residual_layers": 24}` -> constructor kwargs (preset first, then overrides)."""
    raw = dict(config or {})
    preset = raw.pop("preset", "small")
    if preset not in PRESETS:
        raise ModelError(f"model.config.preset: unknown DiffWave preset {preset!r} (available: {', '.join(PRESETS)})")
    return {**PRESETS[preset], **raw}


def split_hop(hop_length: int) -> list[int]:
    """Two upsampling strides whose product is the hop, as equal as possible (256 -> [16, 16])."""
    best = (hop_length, 1)
    for a in range(1, int(math.isqrt(hop_length)) + 1):
        if hop_length % a == 0:
            best = (hop_length // a, a)
    return sorted(best)


def step_embedding(steps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (possibly non-integer) steps: (B,) -> (B, dim); DiffWave's frequencies."""
    half = dim // 2
    freqs = 10.0 ** (torch.arange(half, device=steps.device, dtype=torch.float32) * 4.0 / max(half - 1, 1))
    table = steps.float().unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([torch.sin(table), torch.cos(table)], dim=1)


def _conv1d(*args: Any, **kwargs: Any) -> nn.Conv1d:
    layer = nn.Conv1d(*args, **kwargs)
    nn.init.kaiming_normal_(layer.weight)
    return layer


class MelUpsampler(nn.Module):
    """Frames -> samples with transposed 2-D convolutions over (mel bin, time), one per stride."""

    def __init__(self, strides: list[int]) -> None:
        super().__init__()
        self.strides = list(strides)
        self.convs = nn.ModuleList(
            nn.ConvTranspose2d(1, 1, (3, 2 * s), stride=(1, s), padding=(1, s // 2)) for s in self.strides
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = mel.unsqueeze(1)
        for s, conv in zip(self.strides, self.convs, strict=True):
            frames = x.shape[-1]
            x = F.leaky_relu(conv(x), 0.4)[..., : frames * s]  # odd strides give one extra sample
        return x.squeeze(1)


class ResidualLayer(nn.Module):
    """One gated residual layer. Parameters are stored as convolutions (the paper's layout); forward
    runs channel-last as matrix products (3 taps of the dilated convolution + the 1x1 projections),
    which is 2-4x faster than `conv1d` on a CPU at these widths."""

    def __init__(self, n_mels: int, channels: int, dilation: int, step_dim: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.dilated_conv = _conv1d(channels, 2 * channels, 3, padding=dilation, dilation=dilation)
        self.step_projection = nn.Linear(step_dim, channels)
        self.conditioner_projection = _conv1d(n_mels, 2 * channels, 1)
        self.output_projection = _conv1d(channels, 2 * channels, 1)

    def condition(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) channel-last upsampled mel -> this layer's (B, T, 2C) conditioning (+ both biases)."""
        w = self.conditioner_projection.weight[:, :, 0].t()
        bias = self.conditioner_projection.bias + self.dilated_conv.bias
        return torch.matmul(cond, w) + bias

    def forward(self, x: torch.Tensor, cond: torch.Tensor, step: torch.Tensor,
                work: Workspace | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, T, C); cond: (B, T, n_mels); step: (B, step_dim). `work`: sampling (DiffWave.forward gives it
        # only when no gradient is recorded and autocast is off)
        if work is not None:
            return self._sample_forward(x, cond, step, work)
        b, n, c = x.shape
        d = self.dilation
        y = x + self.step_projection(step).unsqueeze(1)
        # The batch, zero-padded by d on both sides, as one (B * (T + 2d), C) matrix: the three taps of the
        # dilated convolution are then contiguous row windows of it, and each is a single matrix product.
        # Output row r = bi * (T + 2d) + t holds utterance bi, sample t (rows with t >= T are never read).
        yp = F.pad(y, (0, 0, d, d)).reshape(-1, c)
        rows = yp.shape[0] - 2 * d
        w = self.dilated_conv.weight
        z = torch.mm(yp[:rows], w[:, :, 0].t())
        for k in (1, 2):
            z = torch.addmm(z, yp[k * d : k * d + rows], w[:, :, k].t())
        z = z.view(1, n, 2 * c) if b == 1 else z.as_strided((b, n, 2 * c), ((n + 2 * d) * 2 * c, 2 * c, 1))
        z = z + self.condition(cond)
        gate, filt = z.chunk(2, dim=-1)
        h = torch.sigmoid(gate) * torch.tanh(filt)
        out = torch.matmul(h, self.output_projection.weight[:, :, 0].t()) + self.output_projection.bias
        residual, skip = out.chunk(2, dim=-1)
        return (x + residual) * (1.0 / math.sqrt(2.0)), skip

    def _sample_forward(self, x: torch.Tensor, cond: torch.Tensor, step: torch.Tensor,
                        work: Workspace) -> tuple[torch.Tensor, torch.Tensor]:
        """The same layer without autograd (sampling), in fewer passes over memory the layers share.

        Profiled on 2 cores of an AMD EPYC (AVX2), 2 s at 22.05 kHz: the training form's bias additions and the
        sum of the conditioning's product with the taps' took 11 ms each per layer, against 2.4 ms for a tap's
        product accumulated into an existing buffer; a bias copied into a freshly allocated (T, 2C) tensor took
        4.5 ms, into a reused one 1.1 ms. With `tanh` and `sigmoid` on strided halves they were most of a sampling
        step. Here every product and both biases accumulate into one buffer, tanh(f) = 2 sigmoid(2f) - 1 (the filter half's
        weights doubled) lets one in-place sigmoid serve both halves, and the layers write into buffers of
        `work` that they pass on to each other. The result is `forward`'s under autograd to float rounding
        (tests/test_vocoder.py). The returned tensors are views of `work`: valid until the next layer but one.
        """
        b, n, c = x.shape
        d = self.dilation
        padded = n + 2 * d
        rows = b * padded - 2 * d  # output row r = bi * (T + 2d) + t, as in `forward`
        yp = work.take("input", b * padded * c).view(b, padded, c)
        yp[:, :d].zero_()
        yp[:, n + d :].zero_()
        torch.add(x, self.step_projection(step).unsqueeze(1), out=yp[:, d : n + d])
        yp = yp.view(-1, c)
        scale = torch.ones(2 * c, 1, dtype=x.dtype, device=x.device)
        scale[c:] = 2.0
        z = work.take("gates", rows * 2 * c).view(rows, 2 * c)
        cached = work.conditioning.get(self)
        if cached is None:  # the conditioning's product and both biases: the same at every step of one sample
            cached = work.keep_conditioning(self, rows * 2 * c)
            target = (cached if cached is not None else z).view(rows, 2 * c)
            bias = (self.conditioner_projection.bias + self.dilated_conv.bias) * scale[:, 0]
            w_cond = (self.conditioner_projection.weight[:, :, 0] * scale).t()
            if b == 1:
                torch.addmm(bias, cond.reshape(n, -1), w_cond, out=target)
            else:
                view = target.zero_().as_strided((b, n, 2 * c), (padded * 2 * c, 2 * c, 1))  # zero: rows between utterances
                view.copy_(bias.expand(b, n, 2 * c)).baddbmm_(cond, w_cond.expand(b, -1, -1))
        if cached is not None:
            z.copy_(cached.view(rows, 2 * c))
        w = self.dilated_conv.weight * scale[:, :, None]
        for k in (0, 1, 2):
            z.addmm_(yp[k * d : k * d + rows], w[:, :, k].t())
        z = z.view(1, n, 2 * c) if b == 1 else z.as_strided((b, n, 2 * c), (padded * 2 * c, 2 * c, 1))
        gate, filt = z.sigmoid_().chunk(2, dim=-1)
        h = torch.mul(filt, 2.0, out=work.take("hidden", b * n * c).view(b, n, c)).sub_(1.0).mul_(gate)
        out = work.take(work.alternate("output"), b * n * 2 * c).view(b * n, 2 * c)  # the next layer reads x from here
        torch.addmm(self.output_projection.bias, h.view(b * n, c), self.output_projection.weight[:, :, 0].t(), out=out)
        residual, skip = out.view(b, n, 2 * c).chunk(2, dim=-1)
        return residual.add_(x).mul_(1.0 / math.sqrt(2.0)), skip


class Workspace:
    """Buffers for sampling: flat ones that the layers write into, in turn, instead of allocating their own,
    and each layer's conditioning (its product with the upsampled mel, plus biases), which does not depend on the
    diffusion step. `DiffWave.forward` makes one per call; a sampler that makes one per utterance and passes it to
    every step computes the conditioning once instead of at every step (a fifth of a step's time), holding
    layers x samples x 2 x channels floats for it, up to `conditioning_mb` (the layers beyond are recomputed)."""

    def __init__(self, conditioning_mb: float = 0.0) -> None:
        self.like: torch.Tensor | None = None  # dtype and device of the buffers (set by the first forward)
        self.buffers: dict[str, torch.Tensor] = {}
        self.turn: dict[str, int] = {}
        self.conditioning: dict[nn.Module, torch.Tensor] = {}
        self.conditioning_bytes = int(conditioning_mb * 2**20)
        self.source: torch.Tensor | None = None  # the upsampled mel the kept conditioning belongs to
        self.shape: torch.Size | None = None  # and the shape of the layers' input

    def bind(self, like: torch.Tensor, source: torch.Tensor) -> None:
        """Use for a forward on `source` (the upsampled mel) with buffers like `like`: a new source or input shape drops
        the kept conditioning."""
        if self.like is None or self.like.dtype != like.dtype or self.like.device != like.device:
            self.like, self.buffers = like, {}
        if source is not self.source or like.shape != self.shape:  # the kept sums are laid out for one batch shape
            self.source, self.shape, self.conditioning = source, like.shape, {}

    def keep_conditioning(self, layer: nn.Module, numel: int) -> torch.Tensor | None:
        """A new buffer kept for `layer`'s conditioning, or None when the budget is spent."""
        spent = sum(t.numel() * t.element_size() for t in self.conditioning.values())
        assert self.like is not None
        if spent + numel * self.like.element_size() > self.conditioning_bytes:
            return None
        buf = self.conditioning[layer] = self.like.new_empty(numel)
        return buf

    def take(self, name: str, numel: int) -> torch.Tensor:
        """The first `numel` elements of buffer `name` (grown when needed; contents undefined)."""
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < numel:
            assert self.like is not None
            buf = self.buffers[name] = self.like.new_empty(numel)
        return buf[:numel]

    def alternate(self, name: str) -> str:
        """`name0`, `name1`, `name0`, ...: a layer's output stays intact while the next layer reads it."""
        self.turn[name] = 1 - self.turn.get(name, 1)
        return f"{name}{self.turn[name]}"


class DiffWave(ModelMixin, ConfigMixin):
    """forward(audio (B, T), mel (B, n_mels, T // hop), step (B,) float) -> predicted noise (B, T)."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        residual_layers: int = 30,
        residual_channels: int = 64,
        dilation_cycle: int = 10,
        n_mels: int = 80,
        hop_length: int = 256,
        upsample_strides: list[int] | None = None,
        num_train_timesteps: int = 50,
        step_embedding_dim: int = 128,
        step_hidden_dim: int = 512,
    ) -> None:
        super().__init__()
        strides = list(upsample_strides) if upsample_strides else split_hop(hop_length)
        if math.prod(strides) != hop_length:
            raise ModelError(f"DiffWave: upsample_strides {strides} multiply to {math.prod(strides)}, not hop_length {hop_length}")
        self.register_to_config(upsample_strides=strides)
        self.input_projection = _conv1d(1, residual_channels, 1)
        self.step_mlp = nn.Sequential(nn.Linear(step_embedding_dim, step_hidden_dim), nn.SiLU(),
                                      nn.Linear(step_hidden_dim, step_hidden_dim), nn.SiLU())
        self.upsampler = MelUpsampler(strides)
        self.layers = nn.ModuleList(
            ResidualLayer(n_mels, residual_channels, 2 ** (i % dilation_cycle), step_hidden_dim) for i in range(residual_layers)
        )
        self.skip_projection = _conv1d(residual_channels, residual_channels, 1)
        self.output_projection = _conv1d(residual_channels, 1, 1)
        nn.init.zeros_(self.output_projection.weight)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> DiffWave:
        """diffusers' loading, then every parameter and buffer moved out of the file's memory into a fresh allocation.

        safetensors hands out tensors at 16-byte offsets of its memory map, and MKL's matrix products on AVX2 CPUs
        round differently for operands so aligned: a loaded vocoder sampled up to 1e-7 away from the one that was
        saved. Fresh tensors are 64-byte aligned, like those of a model built in memory (sampling, and training
        continued from a saved vocoder, then compute what the saved model computed).
        """
        model = super().from_pretrained(*args, **kwargs)
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                tensor.data = tensor.data.clone()
        return model

    def upsample(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) -> channel-last (B, frames * hop, n_mels): done once per utterance when sampling."""
        return self.upsampler(mel).transpose(1, 2).contiguous()

    def forward(self, audio: torch.Tensor, mel: torch.Tensor | None, step: torch.Tensor,
                upsampled: torch.Tensor | None = None, workspace: Workspace | None = None) -> torch.Tensor:
        """Predicted noise. Give `mel` (B, n_mels, frames), or `upsampled` = `self.upsample(mel)` computed
        once per utterance when sampling (it does not depend on the step), and with it a `Workspace` kept
        for that utterance's steps (used only without autograd and autocast)."""
        if audio.dim() == 3:
            audio = audio.squeeze(1)
        cond = upsampled if upsampled is not None else self.upsample(mel)
        source = cond
        if cond.shape[1] != audio.shape[-1]:
            raise ModelError(f"DiffWave: audio has {audio.shape[-1]} samples but the mel gives {cond.shape[1]} "
                             f"({cond.shape[1] // self.config.hop_length} frames x hop {self.config.hop_length})")
        if cond.shape[0] != audio.shape[0]:
            cond = cond.expand(audio.shape[0], -1, -1)
        step = step.reshape(-1).to(audio.device)
        if step.numel() == 1 and audio.shape[0] > 1:
            step = step.expand(audio.shape[0])
        emb = self.step_mlp(step_embedding(step, self.config.step_embedding_dim).to(audio.dtype))
        w_in = self.input_projection.weight[:, 0, 0]
        x = F.relu(audio.unsqueeze(-1) * w_in + self.input_projection.bias)  # (B, T, C)
        skip: torch.Tensor | None = None
        # the sampling form's in-place products need one dtype: under autocast the layers keep the autograd form
        work = None
        if not (torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type)):
            work = workspace if workspace is not None else Workspace()
            work.bind(x, source)
        for layer in self.layers:
            x, s = layer(x, cond, emb, work)
            if work is None:
                skip = s if skip is None else skip + s
            elif skip is None:  # `s` is a view of the workspace: keep a copy
                skip = s.clone(memory_format=torch.contiguous_format)
            else:
                skip.add_(s)
        assert skip is not None
        w_skip = self.skip_projection.weight[:, :, 0].t()
        x = F.relu(torch.matmul(skip * (1.0 / math.sqrt(len(self.layers))), w_skip) + self.skip_projection.bias)
        return (torch.matmul(x, self.output_projection.weight[:, :, 0].t()) + self.output_projection.bias).squeeze(-1)

    def num_parameters_m(self) -> float:
        return sum(p.numel() for p in self.parameters()) / 1e6
