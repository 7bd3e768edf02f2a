"""wav2vec 2.0 pretraining models, span masks and distractors that never touch padding.

`build_pretraining_model` makes a `Wav2Vec2ForPreTraining` / `Wav2Vec2ConformerForPreTraining`
from an inline config (from scratch) or from a checkpoint (continued pretraining).

`compute_span_mask` and `sample_negatives` replace transformers' `_compute_mask_indices` and
`_sample_negative_indices` for training: they take the *sub-sampled* attention mask (one entry per
feature-encoder frame, `model._get_feature_vector_attention_mask`), so that no masked frame and no
distractor is ever a padding frame. (The library helpers mark the last frame of the batch, which is
padding, when an utterance is too short for a span, and fail on utterances with fewer than two
masked frames.) Both draw from torch's random stream, or from one `torch.Generator` per utterance
when given (the evaluation split: the same masks at every evaluation, whatever the batching).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import transformers

from pipeline.config import ModelConfig, SSLConfig
from pipeline.errors import ModelError

logger = logging.getLogger(__name__)

# family -> (config class, pretraining model class)
PRETRAINING_FAMILIES: dict[str, tuple[str, str]] = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2ForPreTraining"),
    "wav2vec2-conformer": ("Wav2Vec2ConformerConfig", "Wav2Vec2ConformerForPreTraining"),
}


def ssl_family(cfg: ModelConfig) -> str:
    """The recipe's family, else the checkpoint's model type; only families with a pretraining head."""
    name = cfg.family
    if name == "auto":
        if not cfg.name_or_path:
            raise ModelError("model.family: set it (wav2vec2 or wav2vec2-conformer) when the model comes from an inline model.config")
        from pipeline.models.asr import load_config

        name = load_config(cfg).model_type
    if name not in PRETRAINING_FAMILIES:
        raise ModelError(f"model.family: {name!r} has no wav2vec 2.0 pretraining model "
                         f"(task ssl supports {', '.join(PRETRAINING_FAMILIES)})")
    return name


def _ssl_options(cfg: ModelConfig, ssl: SSLConfig) -> dict[str, Any]:
    if cfg.mask_time_prob is not None or cfg.mask_time_length is not None:
        raise ModelError("model.mask_time_prob/mask_time_length: for task ssl set ssl.mask_time_prob/ssl.mask_time_length")
    opts: dict[str, Any] = {
        "apply_spec_augment": True,  # the learned mask embedding replaces the masked frames
        "mask_time_prob": ssl.mask_time_prob,
        "mask_time_length": ssl.mask_time_length,
        "mask_time_min_masks": ssl.mask_time_min_masks,
        "num_negatives": ssl.num_negatives,
        "contrastive_logits_temperature": ssl.contrastive_logits_temperature,
        "diversity_loss_weight": ssl.diversity_loss_weight,
        "mask_feature_prob": cfg.mask_feature_prob or 0.0,
    }
    if cfg.mask_feature_length is not None:
        opts["mask_feature_length"] = cfg.mask_feature_length
    if cfg.layerdrop is not None:
        opts["layerdrop"] = cfg.layerdrop
    if cfg.dropout is not None:
        opts["hidden_dropout"] = cfg.dropout
    return opts


def build_pretraining_model(family: str, cfg: ModelConfig, ssl: SSLConfig) -> Any:
    config_cls, model_cls = (getattr(transformers, n) for n in PRETRAINING_FAMILIES[family])
    opts = _ssl_options(cfg, ssl)
    if cfg.name_or_path:
        from pipeline.models.asr import load_config

        config = load_config(cfg)
        for key, value in opts.items():
            setattr(config, key, value)
        try:
            model, info = model_cls.from_pretrained(cfg.name_or_path, config=config, revision=cfg.revision, dtype="float32",
                                                    output_loading_info=True, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{cfg.name_or_path}: cannot load the model ({str(exc).splitlines()[0]})") from None
        missing = [k for k in info.get("missing_keys", []) if "masked_spec_embed" not in k]
        if missing:
            logger.warning("%s: %d weights are not in the checkpoint and start from scratch (e.g. %s): a fine-tuned "
                           "(CTC) checkpoint has no quantizer; continued pretraining works best from a pretraining one",
                           cfg.name_or_path, len(missing), ", ".join(sorted(missing)[:3]))
    else:
        raw = dict(cfg.config or {})
        raw.pop("model_type", None)
        raw.update(opts)
        try:
            config = config_cls(**raw)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"model.config: invalid {family} configuration ({str(exc).splitlines()[0]})") from None
        model = model_cls(config)
    if cfg.freeze_feature_encoder:
        model.freeze_feature_encoder()
    return model


def codebook_size(config: Any) -> int:
    return int(config.num_codevector_groups) * int(config.num_codevectors_per_group)


def gumbel_temperature(ssl: SSLConfig, step: int) -> float:
    """The quantizer's temperature for optimizer step `step` (0-based): a function of the step only."""
    return max(ssl.max_gumbel_temperature * ssl.gumbel_temperature_decay**step, ssl.min_gumbel_temperature)


# ---------------------------------------------------------------------------------------------
# Masks and distractors


def _generator(generators: torch.Generator | Sequence[torch.Generator] | None, i: int) -> torch.Generator | None:
    if generators is None or isinstance(generators, torch.Generator):
        return generators
    return generators[i]


def compute_span_mask(
    sub_attention_mask: torch.Tensor,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 2,
    generators: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Boolean (batch, frames) mask of spans inside each utterance's real frames.

    An utterance of L real frames gets `int(mask_prob * L / mask_length + u)` spans (u uniform in
    [0, 1): probabilistic rounding), at least `min_masks`, at distinct start frames in
    [0, L - mask_length] (spans may overlap), so every span lies inside the utterance. Utterances
    shorter than `mask_length` frames, or left with fewer than two masked frames (no distractor to
    draw), are not masked: they add nothing to the loss.
    """
    sub = sub_attention_mask.bool().cpu()
    batch, frames = sub.shape
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    for i in range(batch):
        gen = _generator(generators, i)
        length = int(sub[i].sum())
        starts_possible = length - mask_length + 1
        if starts_possible <= 0:
            continue
        u = float(torch.rand((), generator=gen))
        count = max(int(mask_prob * length / mask_length + u), min_masks)
        count = min(count, starts_possible)
        if count <= 0:
            continue
        starts = torch.randperm(starts_possible, generator=gen)[:count]
        index = (starts[:, None] + torch.arange(mask_length)[None, :]).flatten()
        mask[i, index] = True
        if int(mask[i].sum()) < 2:
            mask[i] = False
    return mask & sub


def sample_negatives(
    mask: torch.Tensor,
    num_negatives: int,
    generators: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """(batch, frames, num_negatives) flat indices into batch*frames: distractors for each masked frame.

    A masked frame's distractors are drawn uniformly, with replacement, among the *other* masked
    frames of the same utterance (as in fairseq and transformers). Unmasked frames (their rows are
    ignored by the loss) point at their own utterance's first frame, which is real audio too.
    """
    mask = mask.bool().cpu()
    batch, frames = mask.shape
    out = torch.zeros(batch, frames, num_negatives, dtype=torch.long)
    for i in range(batch):
        gen = _generator(generators, i)
        base = i * frames
        out[i] = base
        positions = mask[i].nonzero().squeeze(1)
        m = positions.numel()
        if m < 2:
            continue
        draw = torch.randint(0, m - 1, (m, num_negatives), generator=gen)
        draw = draw + (draw >= torch.arange(m)[:, None]).long()  # skip the frame itself, stay uniform
        out[i, positions] = base + positions[draw]
    return out


def contrastive_logits(model: Any, projected_states: torch.Tensor, projected_quantized: torch.Tensor,
                       negatives: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(masked frames, 1 + K) logits, the positive first; distractors equal to the positive are -inf."""
    batch, frames, dim = projected_quantized.shape
    neg = projected_quantized.reshape(-1, dim)[negatives.reshape(-1)].view(batch, frames, -1, dim).permute(2, 0, 1, 3)
    logits = model.compute_contrastive_logits(projected_quantized[None], neg, projected_states,
                                              model.config.contrastive_logits_temperature)
    neg_is_pos = (projected_quantized[None] == neg).all(-1)
    logits = logits.float()
    logits[1:][neg_is_pos] = -math.inf
    return logits[:, mask].transpose(0, 1)


def perplexity_from_counts(counts: torch.Tensor) -> float:
    """Sum over groups of exp(entropy) of each group's code distribution; counts: (groups, entries)."""
    probs = counts.double() / counts.sum(-1, keepdim=True).clamp(min=1)
    entropy = -torch.special.xlogy(probs, probs).sum(-1)
    return float(torch.exp(entropy).sum())
