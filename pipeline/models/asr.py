"""CTC model families: build from a checkpoint or an inline config, with a character tokenizer.

Every family goes through the same three steps: a feature extractor (raw waveform or log-mel), a
tokenizer (a character vocabulary built from the train split, or the checkpoint's own), and a
`*ForCTC` model whose output layer and blank id agree with that tokenizer. `preflight` checks the
agreement before any training step, so a mismatch is a one-line error instead of a NaN loss or a
WER stuck at 100%.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForCTC,
    AutoTokenizer,
    ParakeetTokenizer,
    PreTrainedModel,
    Wav2Vec2CTCTokenizer,
)

from pipeline.config import ModelConfig
from pipeline.data.text import PAD, UNK, WORD_DELIMITER
from pipeline.errors import ModelError, RecipeError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    config_class: str
    feature_extractor_class: str
    blank_last: bool = False  # the family's checkpoints put the blank (= pad) last
    can_freeze_feature_encoder: bool = True
    has_wav2vec2_masking: bool = True  # mask_time_*/mask_feature_* config keys
    dropout_key: str = "hidden_dropout"
    layerdrop_key: str = "layerdrop"
    nested_encoder: bool = False  # options live in config.encoder_config

    def config_cls(self) -> type:
        return getattr(transformers, self.config_class)

    def default_feature_extractor(self, overrides: dict[str, Any] | None = None) -> Any:
        cls = getattr(transformers, self.feature_extractor_class)
        kwargs: dict[str, Any] = {}
        if self.feature_extractor_class == "Wav2Vec2FeatureExtractor":
            kwargs = {"feature_size": 1, "sampling_rate": 16000, "padding_value": 0.0, "do_normalize": True,
                      "return_attention_mask": True}
        kwargs.update(overrides or {})
        return cls(**kwargs)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("wav2vec2", ("wav2vec2",), "Wav2Vec2Config", "Wav2Vec2FeatureExtractor"),
        Family("hubert", ("hubert",), "HubertConfig", "Wav2Vec2FeatureExtractor"),
        Family("wavlm", ("wavlm",), "WavLMConfig", "Wav2Vec2FeatureExtractor"),
        Family("wav2vec2-conformer", ("wav2vec2-conformer",), "Wav2Vec2ConformerConfig", "Wav2Vec2FeatureExtractor"),
        Family("wav2vec2-bert", ("wav2vec2-bert",), "Wav2Vec2BertConfig", "SeamlessM4TFeatureExtractor",
               can_freeze_feature_encoder=False),
        Family("parakeet", ("parakeet_ctc",), "ParakeetCTCConfig", "ParakeetFeatureExtractor", blank_last=True,
               can_freeze_feature_encoder=False, has_wav2vec2_masking=False, dropout_key="dropout",
               nested_encoder=True),
    )
}
_BY_MODEL_TYPE = {mt: f for f in FAMILIES.values() for mt in f.model_types}


def detect_family(cfg: ModelConfig) -> Family:
    """The family named by the recipe, else the one of the checkpoint's `config.json`."""
    if cfg.family != "auto":
        try:
            return FAMILIES[cfg.family]
        except KeyError:
            raise ModelError(f"model.family: unknown family {cfg.family!r} (choose auto, {', '.join(FAMILIES)})") from None
    if cfg.name_or_path:
        config = load_config(cfg)
        fam = _BY_MODEL_TYPE.get(config.model_type)
        if fam is None:
            raise ModelError(f"{cfg.name_or_path}: model type {config.model_type!r} is not a supported CTC family ({', '.join(FAMILIES)})")
        return fam
    raise ModelError("model.family: set it (e.g. wav2vec2, parakeet) when the model comes from an inline model.config")


def load_config(cfg: ModelConfig) -> Any:
    try:
        return AutoConfig.from_pretrained(cfg.name_or_path, revision=cfg.revision, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{cfg.name_or_path}: cannot load the model config ({str(exc).splitlines()[0]})") from None


def character_tokenizer(vocab: dict[str, int]) -> Wav2Vec2CTCTokenizer:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.json"
        path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        return Wav2Vec2CTCTokenizer(
            str(path), unk_token=UNK, pad_token=PAD, word_delimiter_token=WORD_DELIMITER,
            bos_token=None, eos_token=None, do_lower_case=False,
        )


def subword_tokenizer(texts: Sequence[str], vocab_size: int, blank_last: bool = False) -> ParakeetTokenizer:
    """A byte-pair vocabulary of `vocab_size` tokens (pad and unk included) learned from training text.

    Subword units are what NeMo's Conformer CTC models predict: about a third as many targets per
    second as characters, so CTC fits at 80 ms output frames (8x subsampling) where characters need
    40 ms or less. Words are marked SentencePiece-style ("\u2581" starts a word). `ParakeetTokenizer`
    is transformers' CTC tokenizer for such vocabularies (it merges repeats and drops the blank when
    decoding), so the saved model loads in `transformers.pipeline` without this project's code.
    """
    alphabet = sorted({ch for text in texts for ch in text if ch != " "})
    specials = [UNK] if blank_last else [PAD, UNK]
    smallest = len(specials) + len(alphabet) + 1 + int(blank_last)
    if vocab_size < smallest:
        raise ModelError(f"model.vocab_size: {vocab_size} is smaller than the training text's {len(alphabet)} "
                         f"characters plus the word marker and special tokens ({smallest})")
    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - int(blank_last), special_tokens=specials,
                                  initial_alphabet=[*alphabet, "\u2581"], show_progress=False)
    backend.train_from_iterator(texts, trainer)
    if blank_last:  # the blank (= pad) after every other id, as Parakeet checkpoints have it
        backend.add_special_tokens([PAD])
    return ParakeetTokenizer(tokenizer_object=backend, unk_token=UNK, pad_token=PAD)


def load_feature_extractor(family: Family, cfg: ModelConfig) -> Any:
    """The checkpoint's feature extractor (or the family default), with the recipe's overrides on top.

    Overrides on a checkpoint change what the model hears, e.g. an 8 kHz front-end for telephone-band
    recordings; they are saved with the fine-tuned model, so every later reader uses the same front-end.
    """
    if cfg.name_or_path:
        try:
            return AutoFeatureExtractor.from_pretrained(cfg.name_or_path, revision=cfg.revision, **(cfg.feature_extractor or {}))
        except (OSError, ValueError):
            logger.info("%s has no feature-extractor config; using the %s default", cfg.name_or_path, family.name)
    return family.default_feature_extractor(cfg.feature_extractor)


def load_checkpoint_tokenizer(cfg: ModelConfig) -> Any:
    if not cfg.name_or_path:
        raise ModelError("model.tokenizer=checkpoint needs model.name_or_path (an inline config has no tokenizer)")
    try:
        return AutoTokenizer.from_pretrained(cfg.name_or_path, revision=cfg.revision, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{cfg.name_or_path}: model.tokenizer=checkpoint but no tokenizer could be loaded ({str(exc).splitlines()[0]})") from None


def _options(family: Family, cfg: ModelConfig, from_checkpoint: bool) -> dict[str, Any]:
    """Recipe options as config keys; an option the family lacks is an error, not a silent no-op."""
    opts: dict[str, Any] = {}
    masking = {k: getattr(cfg, k) for k in ("mask_time_prob", "mask_time_length", "mask_feature_prob", "mask_feature_length")}
    if family.has_wav2vec2_masking:  # otherwise the ASR task masks the log-mel features itself
        opts.update({k: v for k, v in masking.items() if v is not None})
    if cfg.layerdrop is not None:
        opts[family.layerdrop_key] = cfg.layerdrop
    if cfg.dropout is not None:
        opts[family.dropout_key] = cfg.dropout
    if cfg.freeze_feature_encoder and not family.can_freeze_feature_encoder:
        raise ModelError(f"model.freeze_feature_encoder: the {family.name} family has no convolutional feature encoder to freeze")
    return opts


def build_model(family: Family, cfg: ModelConfig, tokenizer: Any, keep_head: bool) -> PreTrainedModel:
    """A `*ForCTC` model whose head matches `tokenizer` (a new head unless `keep_head`)."""
    vocab_size = len(tokenizer)
    pad_id = int(tokenizer.pad_token_id)
    ctc = {"ctc_loss_reduction": "sum", "ctc_zero_infinity": True}
    opts = _options(family, cfg, from_checkpoint=bool(cfg.name_or_path))
    if cfg.name_or_path:
        config = load_config(cfg)
        for key, value in {**ctc, **opts}.items():
            target = config.encoder_config if family.nested_encoder and key not in ctc else config
            setattr(target, key, value)
        if not keep_head or config.vocab_size is None:  # a pretrained-only checkpoint may leave it unset
            config.vocab_size = vocab_size
            config.pad_token_id = pad_id
        try:
            model = AutoModelForCTC.from_pretrained(
                cfg.name_or_path, config=config, revision=cfg.revision, ignore_mismatched_sizes=not keep_head,
                trust_remote_code=False, dtype="float32", use_safetensors=None,
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"{cfg.name_or_path}: cannot load the model ({str(exc).splitlines()[0]})") from None
        if not keep_head:  # a new vocabulary: a new output layer, even where the checkpoint's has the same size
            reset_output_layer(model)
        freeze = cfg.freeze_feature_encoder
        if freeze is None:
            freeze = family.can_freeze_feature_encoder
    else:
        raw = dict(cfg.config or {})
        raw.pop("model_type", None)
        if family.nested_encoder:
            encoder = dict(raw.pop("encoder_config", {}) or {})
            encoder.update(opts)
            raw["encoder_config"] = encoder
        else:
            raw.update(opts)
        raw.update(ctc)
        raw.update(vocab_size=vocab_size, pad_token_id=pad_id)
        try:
            config = family.config_cls()(**raw)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"model.config: invalid {family.name} configuration ({str(exc).splitlines()[0]})") from None
        model = AutoModelForCTC.from_config(config)
        freeze = bool(cfg.freeze_feature_encoder)
    if freeze:
        model.freeze_feature_encoder()
    return model


def output_layer(model: PreTrainedModel) -> torch.nn.Module | None:
    """The CTC output layer: `lm_head` (wav2vec2-style families) or `ctc_head` (Parakeet)."""
    for name in ("lm_head", "ctc_head"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    return None


def inter_ctc_layer(family: Family, model: PreTrainedModel, layer: int | None) -> int:
    """The encoder layer whose output the intermediate CTC loss reads (`model.inter_ctc_layer`; None: the middle one).

    Only where that output is what the head reads from the last layer: Parakeet's encoder adds nothing after
    its layers. (The wav2vec2-style encoders differ by variant: a final layer norm, an adapter.)
    """
    if family.name != "parakeet":
        raise RecipeError(f"model.inter_ctc_weight: intermediate CTC is supported for the parakeet family, not {family.name}")
    layers = int(model.config.encoder_config.num_hidden_layers)
    chosen = layers // 2 if layer is None else layer
    if not 1 <= chosen < layers:
        raise RecipeError(f"model.inter_ctc_layer: must be an encoder layer from 1 to {layers - 1} (the last is the "
                          f"output itself), got {chosen}")
    return chosen


def reset_output_layer(model: PreTrainedModel) -> None:
    """Fresh weights for the output layer (normal, std = config.initializer_range; zero bias)."""
    head = output_layer(model)
    if head is None or getattr(head, "weight", None) is None:
        raise ModelError(f"{type(model).__name__}: no CTC output layer (lm_head / ctc_head) to initialise")
    std = float(getattr(model.config, "initializer_range", 0.02))
    with torch.no_grad():
        head.weight.normal_(mean=0.0, std=std)
        if getattr(head, "bias", None) is not None:
            head.bias.zero_()
    logger.info("new output layer: %d classes (the checkpoint's own output layer is not reused)", head.weight.shape[0])


def blank_id(model: PreTrainedModel) -> int:
    return int(model.config.pad_token_id)


def output_size(model: PreTrainedModel) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        head = getattr(model, "lm_head", None) or getattr(model, "ctc_head", None)
    if head is None:
        return int(model.config.vocab_size)
    if hasattr(head, "out_features"):
        return int(head.out_features)
    weight = getattr(head, "weight", None)
    if weight is None:
        for sub in head.modules():
            if hasattr(sub, "out_channels"):
                return int(sub.out_channels)
            if hasattr(sub, "out_features"):
                return int(sub.out_features)
        return int(model.config.vocab_size)
    return int(weight.shape[0])


def preflight(model: PreTrainedModel, tokenizer: Any, where: str = "model") -> None:
    """Tokenizer size, output layer size and blank id must agree before training or evaluating."""
    n_tok = len(tokenizer)
    n_out = output_size(model)
    blank = model.config.pad_token_id
    if n_out != n_tok:
        raise ModelError(
            f"{where}: the output layer has {n_out} classes but the tokenizer has {n_tok} tokens; "
            "use model.tokenizer=characters to train a new head, or a tokenizer that matches the checkpoint"
        )
    if blank is None or not 0 <= int(blank) < n_out:
        raise ModelError(f"{where}: CTC blank id (config.pad_token_id={blank}) is outside the output layer (0..{n_out - 1})")
    if tokenizer.pad_token_id is not None and int(tokenizer.pad_token_id) != int(blank):
        raise ModelError(
            f"{where}: the tokenizer's pad token id is {tokenizer.pad_token_id} but the model's CTC blank "
            f"(config.pad_token_id) is {blank}; they must be the same id"
        )
