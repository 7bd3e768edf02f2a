"""Faster forward passes for transformers' Parakeet (FastConformer) encoder, same parameters, same math.

Profiling a quickstart training step on 2 CPU cores (torch.profiler, `benchmarks/finetune.py`'s
model) showed the time going to kernels that do little arithmetic, not to the matrix products:
- the 2-D subsampling convolutions in NCHW layout: oneDNN's depthwise and 1x1 kernels are several
  times slower on it than on channels-last (the subsampling's forward + backward: 37 -> 20 ms);
- three full-size masking multiplications of the subsampling's largest activations, forward and
  backward, whatever the padding;
- the convolution module's 1x1 `Conv1d`s, slower than the same product as a `linear`, and its
  depthwise `Conv1d`, slower than a channels-last 2-D convolution;
- the subsampling's first convolution (one input channel, for which oneDNN has no fast kernel, and whose
  NCHW output made the next elementwise kernels read two memory orders at once), and the transposed copy
  of its last activations for the `linear` after it; on an AVX2 CPU (AMD EPYC), its weight gradient, a
  product of two long thin matrices that MKL ran at 2.5 GFLOP/s (10% of a training step);
- in the attention, the relative positions projected once per utterance although they are the same for
  all, a padded copy for the relative shift, and the content scores computed, scaled and added to the
  position scores in three passes.

`speed_up(model)` swaps in forwards that do the same arithmetic with the faster kernels. Parameters,
buffers, the module tree and `state_dict` are untouched, so a model saves, loads and runs in
`transformers.pipeline` exactly as before; outputs agree with the originals to float rounding (1e-5).
Models of other families are returned as they are. The forwards write no module state, so several
threads may run them at once (as `Transcriber` does). The training loop (`train.fast_forward`) and
`Transcriber` apply it on CPUs, where it was measured; on a GPU they keep transformers' forwards.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def speed_up(model: nn.Module) -> nn.Module:
    """Patch, in place, the forwards of the modules this file knows; returns `model`."""
    if getattr(model, "_pipeline_fast_forward", False):
        return model
    count = 0
    for module in model.modules():
        name = type(module).__name__
        forward = _FORWARDS.get(name)
        if forward is None and name.endswith("FeatureEncoder") and _feature_encoder_supported(module):
            forward = _feature_encoder_forward
        if forward is not None:
            module.forward = types.MethodType(forward, module)
            count += 1
    if count:
        model._pipeline_fast_forward = True
    return model


def _conv_channels_last(conv: nn.Conv1d | nn.Conv2d, hidden: torch.Tensor) -> torch.Tensor:
    """`conv` on oneDNN's channels-last kernels; a `Conv1d` as a 2-D convolution over (batch, channels, 1, time).

    `hidden` is 4-D in both cases. oneDNN picks its channels-last kernels by the weight's strides too:
    the (small) weight is copied to channels-last for the call, so the parameter stays as the checkpoint
    has it. Other padding modes run the module itself.
    """
    one_d = isinstance(conv, nn.Conv1d)
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return conv(hidden.squeeze(2)).unsqueeze(2) if one_d else conv(hidden)
    weight = (conv.weight.unsqueeze(2) if one_d else conv.weight).clone(memory_format=torch.channels_last)
    stride, padding, dilation = conv.stride, conv.padding, conv.dilation
    if one_d:
        stride, padding, dilation = (1, stride[0]), (0, padding[0]), (1, dilation[0])
    return F.conv2d(hidden.contiguous(memory_format=torch.channels_last), weight, conv.bias, stride, padding, dilation,
                    conv.groups)


class _MaskedReLU(torch.autograd.Function):
    """In-place ReLU of a convolution's output, then every frame at or past its row's length set to 0
    (frames: dim 1 of (batch, frames, mels, channels)).

    One pass over the largest activation instead of a mask multiplication forward and backward plus a
    ReLU: the padded frames of the output are 0, so ReLU's own backward (gradient where the output is
    positive) already gives them no gradient. In place, as `nn.ReLU(inplace=True)` after a convolution:
    the product that made it does not read its output in backward. Its input must be a fresh tensor,
    not a view: autograd's bookkeeping for an in-place change of a view (a zero-filled copy of the
    base, forward and backward) would cost more than the pass saves.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden.clamp_min_(0)
        frames = hidden.shape[1]
        for i in (lengths < frames).nonzero().flatten().tolist():
            hidden[i, int(lengths[i]):].zero_()
        ctx.mark_dirty(hidden)
        ctx.save_for_backward(hidden)
        return hidden

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (out,) = ctx.saved_tensors
        if grad.stride() != out.stride():  # an elementwise kernel over two memory orders is ~5x slower
            grad = torch.empty_like(out).copy_(grad)
        return torch.ops.aten.threshold_backward(grad, out, 0), None


def _conv2d_nhwc(conv: nn.Conv2d, hidden: torch.Tensor) -> torch.Tensor:
    """`conv` on (batch, height, width, channels) activations, by the fastest kernel measured; same layout out.

    - one input channel (the subsampling's first convolution): one matrix product over the patches.
      oneDNN has no fast kernel for a single input channel (4.1 ms forward, 2.9 ms backward on a 15-s batch,
      against about 1 ms each), and it returns NCHW memory, which the next elementwise kernels then read
      across channels-last gradients (a ReLU backward 4.6 ms instead of 0.7 ms);
    - 1x1, stride 1 (the pointwise convolutions): a `linear` over the contiguous channels;
    - otherwise (the depthwise ones): oneDNN's channels-last kernels, whose (batch, channels, h, w)
      channels-last result is (batch, h, w, channels) memory.
    The first two return fresh tensors (an in-place ReLU may follow); the third a permuted view.
    """
    zero_padded = conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
    if zero_padded and conv.groups == 1 and conv.in_channels == 1:
        return _single_channel_conv2d(conv, hidden[..., 0])
    if zero_padded and conv.groups == 1 and conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0):
        return F.linear(hidden, conv.weight.flatten(1), conv.bias)
    return _conv_channels_last(conv, hidden.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _single_channel_conv2d(conv: nn.Conv2d, image: torch.Tensor) -> torch.Tensor:
    """A convolution of (batch, height, width) images as one matrix product: (batch, h, w, out channels).

    The columns are the kernel taps, each a strided view of the zero-padded input, gathered tap-major
    (kernel-size times the input; gathering them patch-major, with a 3x3 innermost loop, was 4x slower),
    plus a row of ones that carries the bias into the product, so no separate pass writes the bias into
    the (largest) output first.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    image = F.pad(image, (pw, pw, ph, ph))
    batch, height, width = image.shape
    out_h = (height - dh * (kh - 1) - 1) // sh + 1
    out_w = (width - dw * (kw - 1) - 1) // sw + 1
    s = image.stride()
    taps = image.as_strided((kh, kw, batch, out_h, out_w), (dh * s[1], dw * s[2], s[0], sh * s[1], sw * s[2]))
    weight = conv.weight.reshape(conv.out_channels, kh * kw)
    columns = image.new_empty(kh * kw + (conv.bias is not None), batch * out_h * out_w)
    columns[:kh * kw].view(kh, kw, batch, out_h, out_w).copy_(taps)
    if conv.bias is not None:
        columns[-1] = 1
        weight = torch.cat([weight, conv.bias[:, None]], dim=1)
    return _PatchProduct.apply(columns, weight.t(), (batch, out_h, out_w))


class _PatchProduct(torch.autograd.Function):
    """(taps, rows) patch columns -> (batch, h, w, out channels) = columns^T @ weight_t, with a faster weight gradient.

    The weight gradient is a product of two long thin matrices (taps x rows by rows x out channels, rows ~ 37 000
    on a 15-s batch). Autograd's `mm` for it ran at 2.5 GFLOP/s on an AVX2 CPU (MKL), 25 ms of a 250-ms training
    step; summed over blocks of rows by one batched product it takes ~2.5 ms. The output is a tensor of its own,
    not a view (the in-place ReLU after it would otherwise need a copy of this, the largest activation).
    """

    BLOCK = 1024  # rows per block of the weight gradient

    @staticmethod
    def forward(ctx: Any, columns: torch.Tensor, weight_t: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        out = columns.new_empty(*shape, weight_t.shape[1])
        torch.mm(columns.t(), weight_t, out=out.view(-1, weight_t.shape[1]))
        ctx.save_for_backward(columns, weight_t)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        columns, weight_t = ctx.saved_tensors
        taps, rows = columns.shape
        grad = grad.reshape(rows, -1)
        # the features need none in training; a caller asking for it (saliency) gets it
        grad_columns = torch.mm(weight_t, grad.t()) if ctx.needs_input_grad[0] else None
        if not ctx.needs_input_grad[1]:
            return grad_columns, None, None
        blocks = rows // _PatchProduct.BLOCK
        full = blocks * _PatchProduct.BLOCK
        grad_weight = torch.bmm(columns[:, :full].unflatten(1, (blocks, _PatchProduct.BLOCK)).transpose(0, 1),
                                grad[:full].reshape(blocks, _PatchProduct.BLOCK, -1)).sum(0)
        if full < rows:
            grad_weight.addmm_(columns[:, full:], grad[full:])
        return grad_columns, grad_weight, None


def _subsampling_forward(self: Any, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """ParakeetEncoderSubsamplingConv2D.forward on (batch, frames, mels, channels) activations, masking fused into the ReLUs.

    The original zeroes the padded frames after every convolution. After a convolution followed by a
    ReLU, `_MaskedReLU` does it. After one followed by a 1x1 convolution (the depthwise-then-pointwise
    pairs) it is skipped: a 1x1 convolution maps each frame on its own, so those frames only reach
    frames that are zeroed after it, and receive no gradient from them. The final `linear` reads the
    activations as they lie, with its weight's columns reordered from (channels, mels) to (mels, channels),
    instead of transposing them.
    """
    layers = list(self.layers)
    hidden = input_features.unsqueeze(-1)  # (batch, frames, mels, 1 channel)
    lengths = attention_mask.sum(-1) if attention_mask is not None else None
    masked_relu = False  # the next ReLU also masks the frames past `lengths`
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            hidden = _conv2d_nhwc(layer, hidden)
            if lengths is None:
                continue
            lengths = self._get_output_length(lengths, layer)
            following = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(following, nn.ReLU):
                masked_relu = True
            elif not (isinstance(following, nn.Conv2d) and following.kernel_size == (1, 1) and following.stride == (1, 1)):
                frames = torch.arange(hidden.shape[1], device=hidden.device) < lengths[:, None]
                hidden = hidden * frames[:, :, None, None]
        elif masked_relu and isinstance(layer, nn.ReLU):
            hidden = _MaskedReLU.apply(hidden if hidden._base is None else hidden.clone(), lengths)
            masked_relu = False
        else:
            hidden = layer(hidden.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    batch, frames, mels, channels = hidden.shape
    weight = self.linear.weight.view(-1, channels, mels).transpose(1, 2).reshape(-1, mels * channels)
    return F.linear(hidden.reshape(batch, frames, mels * channels), weight, self.linear.bias)


def _conv_module_forward(self: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """ParakeetEncoderConvolutionModule.forward: the 1x1 convolutions as `linear`s on (batch, time, channels),
    the depthwise one as a channels-last 2-D convolution."""
    conv1, depthwise, conv2 = self.pointwise_conv1, self.depthwise_conv, self.pointwise_conv2
    hidden = F.glu(F.linear(hidden_states, conv1.weight.squeeze(-1), conv1.bias), dim=-1)
    if attention_mask is not None:  # (batch, 1, time, time): a frame is audio if any query may attend to it
        keep = attention_mask.any(dim=2) if attention_mask.dtype == torch.bool else (attention_mask == 0.0).any(dim=2)
        if not bool(keep.all()):
            hidden = hidden * keep.transpose(1, 2).to(hidden.dtype)
    hidden = _conv_channels_last(depthwise, hidden.transpose(1, 2).unsqueeze(2))  # (batch, time, channels) memory
    batch, channels, _, time = hidden.shape
    if isinstance(self.norm, nn.BatchNorm1d):  # over (batch * time, channels) rows: the same statistics, one memory order
        hidden = self.activation(self.norm(hidden.permute(0, 2, 3, 1).reshape(batch * time, channels)))
        return F.linear(hidden.view(batch, time, channels), conv2.weight.squeeze(-1), conv2.bias)
    hidden = self.activation(self.norm(hidden.squeeze(2)))
    return F.linear(hidden.transpose(1, 2), conv2.weight.squeeze(-1), conv2.bias)


def _positions_forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    """ParakeetEncoderRelPositionalEncoding.forward: the (2T - 1) sinusoids computed once and expanded over the batch.

    The original computes them for every utterance of the batch, and every layer then projects each copy.
    Expanded (stride 0 over the batch), they let `_attention_forward` project them once. Dropout on the
    positions (`dropout_positions` > 0, in training) returns an ordinary tensor, whose rows differ, and
    the attention then projects every row as before.
    """
    frames = hidden_states.shape[1]
    positions = torch.arange(frames - 1, -frames, -1, device=hidden_states.device, dtype=torch.float)
    freqs = positions[:, None] * self.inv_freq.to(device=hidden_states.device, dtype=torch.float)
    embedding = torch.stack([freqs.sin(), freqs.cos()], dim=-1).reshape(1, freqs.shape[0], -1)
    return embedding.to(hidden_states.dtype).expand(hidden_states.shape[0], -1, -1)


def _attention_forward(self: Any, hidden_states: torch.Tensor, position_embeddings: torch.Tensor | None,
                       attention_mask: torch.Tensor | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """ParakeetEncoderAttention.forward (Transformer-XL relative positions) in fewer, fused kernels.

    - the positions are projected once when they are the same for every utterance (see `_positions_forward`);
    - the relative shift is a strided view of the position scores, not a padded copy;
    - the content scores are added to the (scaled, masked) position scores by the matrix product itself
      (`baddbmm`), instead of a separate product, scaling and addition (transformers' SDPA falls back to
      its unfused path on CPU for this float mask).
    Attention dropout in training, grouped key/value heads and requests for the attention weights keep
    the original forward.
    """
    config = self.config
    heads, dim = config.num_attention_heads, self.head_dim
    if (position_embeddings is None or kwargs.get("output_attentions") or self.num_key_value_groups != 1
            or (self.training and self.attention_dropout > 0)):
        return type(self).forward(self, hidden_states, position_embeddings, attention_mask, **kwargs)
    batch, frames, _ = hidden_states.shape
    query = self.q_proj(hidden_states).view(batch, frames, heads, dim).transpose(1, 2)
    key = self.k_proj(hidden_states).view(batch, frames, heads, dim).transpose(1, 2)
    value = self.v_proj(hidden_states).view(batch, frames, heads, dim).transpose(1, 2)
    if position_embeddings.stride(0) == 0:
        position_embeddings = position_embeddings[:1]
    relative_key = self.relative_k_proj(position_embeddings).view(position_embeddings.shape[0], -1, heads, dim)
    positions = relative_key.shape[1]  # 2 * frames - 1
    # terms (b) and (d): (batch, heads, frames, positions), then row i shifted left by (frames - 1 - i)
    raw = (query + self.bias_v.view(1, heads, 1, dim)) @ relative_key.permute(0, 2, 3, 1)
    raw = raw.contiguous()  # the shift below indexes its storage (a no-op for a product's output)
    shifted = raw.as_strided((batch, heads, frames, frames), (raw.stride(0), raw.stride(1), positions - 1, 1),
                             raw.storage_offset() + frames - 1)
    scores = shifted * self.scaling
    if attention_mask is not None:
        scores.masked_fill_(attention_mask.logical_not(), torch.finfo(scores.dtype).min)
    # terms (a) and (c), added by the product
    content_query = (query + self.bias_u.view(1, heads, 1, dim)).reshape(batch * heads, frames, dim)
    scores = torch.baddbmm(scores.reshape(batch * heads, frames, frames), content_query,
                           key.reshape(batch * heads, frames, dim).transpose(1, 2), alpha=self.scaling)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.bmm(weights, value.reshape(batch * heads, frames, dim))
    out = out.view(batch, heads, frames, dim).transpose(1, 2).reshape(batch, frames, heads * dim)
    return self.o_proj(out), None


def _feature_encoder_forward(self: Any, input_values: torch.Tensor) -> torch.Tensor:
    """Wav2Vec2FeatureEncoder.forward (and HuBERT's, WavLM's, ...) on channels-last activations.

    Each `Conv1d` runs as a 2-D convolution over (batch, channels, 1, time) in channels-last memory,
    which is (batch, time, channels): the per-frame LayerNorm of the "layer" layout then normalises
    a contiguous last dimension without the two transposed copies the original makes per layer, and
    oneDNN converts no layouts between layers. The result, (batch, channels, time) in (batch, time,
    channels) memory, is what the model transposes next, so that copy goes too. The waveform itself
    needs no gradient: the original asks for one only for gradient checkpointing, which keeps the
    original forward.
    """
    checkpointing = self.gradient_checkpointing or any(getattr(c, "gradient_checkpointing", False) for c in self.conv_layers)
    if checkpointing and self.training:
        return type(self).forward(self, input_values)
    hidden = input_values[:, None, None, :]  # (batch, 1, 1, samples): channels-last and contiguous alike
    for layer in self.conv_layers:
        hidden = _conv_channels_last(layer.conv, hidden)
        norm = getattr(layer, "layer_norm", None)
        if isinstance(norm, nn.LayerNorm):  # per frame, over channels: the contiguous dimension
            hidden = F.layer_norm(hidden.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias,
                                  norm.eps).permute(0, 3, 1, 2)
        elif norm is not None:
            hidden = norm(hidden)
        hidden = layer.activation(hidden)
    return hidden.squeeze(2)


def _feature_encoder_supported(module: nn.Module) -> bool:
    """A convolutional waveform encoder of the wav2vec 2.0 kind whose layers this file knows."""
    layers = getattr(module, "conv_layers", None)
    if layers is None or not hasattr(module, "gradient_checkpointing"):
        return False
    for layer in layers:
        conv, norm = getattr(layer, "conv", None), getattr(layer, "layer_norm", None)
        if not isinstance(conv, nn.Conv1d):
            return False
        if norm is not None and not isinstance(norm, nn.LayerNorm | nn.GroupNorm):
            return False
        if not hasattr(layer, "activation"):
            return False
    return True


_FORWARDS = {
    "ParakeetEncoderSubsamplingConv2D": _subsampling_forward,
    "ParakeetEncoderConvolutionModule": _conv_module_forward,
    "ParakeetEncoderRelPositionalEncoding": _positions_forward,
    "ParakeetEncoderAttention": _attention_forward,
}
