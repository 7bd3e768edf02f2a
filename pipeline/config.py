"""Recipes: YAML files read once into typed dataclasses.

A recipe is the single source of every setting of a run. `load_recipe` reads the YAML with
`yaml.safe_load`, applies `key=value` overrides from the command line (dotted keys, values parsed
as YAML scalars), and builds the nested dataclasses below. An unknown key is an error that names
it; so is a value of the wrong type. Recipes may start from another one with `base: other.yaml`
(a path relative to the recipe), whose keys they override.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import RecipeError


@dataclass
class DataSpec:
    """Where utterances come from: a local folder or manifest, or a Hub dataset (online only).

    A plain string in a recipe is shorthand for `{path: STRING}`.
    """

    path: str
    config: str | None = None  # Hub dataset configuration name
    split: str | None = None  # Hub dataset split (local folders: sub-folder name)
    audio_column: str | None = None  # default: file_name (folders) / audio / path
    text_column: str = "text"
    speaker_column: str | None = "speaker"
    limit: int | None = None  # keep only the first N rows (quick experiments)


@dataclass
class AugmentConfig:
    """Training-time augmentation that makes models generalise to voices and recording conditions they never heard."""

    speed: list[float] | None = None  # [low, high]: random speed (tempo and pitch) factor per utterance
    vtlp: float = 0.0  # vocal-tract-length perturbation: random warp of the frequency axis by up to +/- this
    tempo: list[float] | None = None  # [low, high]: random speaking-rate factor per utterance, pitch kept (log-mel)
    # probability of cutting an utterance to its speech (the 10-ms frames within trim_db of its loudest): for
    # recordings clipped tightly at the word, whose lack of leading and trailing silence a model never heard
    trim: float = 0.0
    trim_db: float = 20.0
    # additive noise: a spec of noise recordings (folder, manifest, Hub dataset: MUSAN, your room tone), or
    # `synthetic` (coloured Gaussian noise, white to brown); mixed at an SNR drawn from noise_snr (dB)
    noise: DataSpec | None = None
    noise_snr: list[float] = field(default_factory=lambda: [5.0, 25.0])
    noise_prob: float = 0.5  # share of training utterances that get noise
    # reverberation: a spec of room impulse responses, or `synthetic` (a decaying-noise room, RT60 from reverb_rt60)
    reverb: DataSpec | None = None
    reverb_rt60: list[float] = field(default_factory=lambda: [0.2, 0.8])
    reverb_prob: float = 0.5  # share of training utterances that get reverberation


AUGMENTATIONS = ("speed", "vtlp", "tempo", "trim", "noise", "reverb")  # the keys that switch one on


@dataclass
class DataConfig:
    train: DataSpec | None = None
    eval: DataSpec | None = None
    min_duration: float = 0.0  # seconds; shorter utterances are skipped and reported
    max_duration: float = 20.0  # seconds; longer utterances are skipped and reported
    normalizer: str = "default"  # see pipeline.data.text.NORMALIZERS
    on_bad_rows: Literal["skip", "error"] = "skip"
    num_proc: int = 1  # processes for measuring audio files (cached afterwards)
    cache_dir: str | None = None  # default: ~/.cache/speech-pipeline
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    family: str = "auto"  # auto | wav2vec2 | hubert | wavlm | wav2vec2-conformer | wav2vec2-bert | parakeet
    name_or_path: str | None = None  # Hub id or local directory
    config: dict[str, Any] | None = None  # inline architecture (used when name_or_path is empty)
    feature_extractor: dict[str, Any] | None = None  # feature-extractor overrides (on a checkpoint's too)
    # characters: a new vocabulary from the train split and a new head; checkpoint: keep the checkpoint's
    # tokenizer and head; auto: keep them when the checkpoint has a tokenizer covering the train text;
    # subwords: a byte-pair vocabulary of `vocab_size` tokens learned from the train split, and a new head
    tokenizer: Literal["characters", "subwords", "checkpoint", "auto"] = "characters"
    vocab_size: int = 256  # tokens of a `subwords` vocabulary, blank and <unk> included
    freeze_feature_encoder: bool | None = None  # None: on for checkpoints that support it
    mask_time_prob: float | None = None
    mask_time_length: int | None = None
    mask_feature_prob: float | None = None
    mask_feature_length: int | None = None
    layerdrop: float | None = None
    dropout: float | None = None  # hidden dropout / encoder dropout, family-specific key
    # Intermediate CTC (Lee & Watanabe, 2021): the output layer also reads the hidden states after encoder
    # layer `inter_ctc_layer` (None: the middle one) and that CTC loss gets this share of the total. The
    # layer is shared, so the saved model is unchanged.
    inter_ctc_weight: float = 0.0
    inter_ctc_layer: int | None = None
    revision: str | None = None


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    max_minutes: float | None = None  # wall-clock cap of the whole run (resumes included); checkpointed when hit
    # With max_minutes: after warm-up (counted in steps) the LR decay advances by the share of the budget
    # used when that is ahead of the share of steps done, so a capped run still decays fully by the deadline.
    schedule_follows_budget: bool = True
    # With it and max_minutes: warm-up too is a share of the time budget (warmup_ratio of the minutes, or
    # warmup_steps / planned steps), so a recipe warms up for the same share of its minutes on a fast machine
    # or a slow one, however many epochs it plans. Off: warm-up counts steps (at most what it plans)
    warmup_follows_budget: bool = False
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    adam_beta2: float = 0.98
    # "muon": Muon (torch.optim.Muon) on the hidden Linear weight matrices, AdamW on the rest, one learning
    # rate (pipeline.training.optimizers). "auto": Muon where its Newton-Schulz iteration is cheap (a GPU, a CPU
    # with bfloat16 units), AdamW elsewhere (CPUs without them, sharded FSDP/DeepSpeed runs); a resumed run keeps
    # the optimizer its checkpoint was trained with
    optimizer: Literal["adamw", "muon", "auto"] = "adamw"
    muon_momentum: float = 0.95
    muon_ns_steps: int = 5  # Newton-Schulz iterations orthogonalising each update: its cost, on CPUs a large one
    muon_convolutions: bool = False  # Muon also for ungrouped convolution kernels, flattened to matrices
    # Precision of Muon's Newton-Schulz iteration. auto: float32 on CPUs without bfloat16 units (AMX, AVX-512 BF16),
    # which emulate bfloat16 products (55x slower than float32 on an AVX2 EPYC); bfloat16 elsewhere (torch's choice)
    muon_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    warmup_steps: int | None = None
    warmup_ratio: float = 0.1
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"
    batch_seconds: float = 120.0  # total audio seconds per batch on each process
    max_batch_size: int = 64
    max_padding: float = 0.25  # largest share of padding a batch may carry before it is split
    sortagrad_epochs: int = 0  # the first epochs take their batches shortest first (SortaGrad), then shuffled
    gradient_accumulation: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    # Recompute each encoder layer's activations in the backward pass instead of keeping them from the forward
    # (ASR and SSL models): on 2 CPU cores a 108 M Parakeet's step took 0.42x the peak memory for 1.06x the time;
    # the 3.3 M quickstart's, whose largest activations are before the layers, 0.78x for 1.49x (Performance)
    gradient_checkpointing: bool = False
    eval_every: int = 0  # steps; 0: at the end of each epoch
    save_every: int = 0  # steps; 0: at the end of each epoch
    keep_last: int = 2
    # The weights OUTPUT holds at the end: the last step's, or ("best") those of the periodic evaluation with the
    # lowest main metric (the task's: wer, mel_l1, ...), checkpointed when reached and spared by keep_last
    final_model: Literal["last", "best"] = "last"
    best_metric: str | None = None  # the evaluation metric that ranks them (lower is better); None: the task's main one
    early_stopping_patience: int = 0  # stop after this many evaluations without improvement (0: never)
    early_stopping_min_delta: float = 0.0  # an evaluation improves when it beats the best by more than this
    resume: bool = False
    # false: resume also under other processes or batching settings (warned; the epoch goes on from the same share
    # of its batches, random states it lacks are fresh: not the uninterrupted run); true: those are an error
    resume_exact: bool = True
    log_every: int = 10
    num_workers: int = 0
    feature_cache_gb: float = 2.0  # keep computed model inputs in memory up to this size (0: off)
    fast_forward: bool = True  # CPU: faster equivalent forwards where known (pipeline.models.fast_forward)
    threads: int | None = None  # torch intra-op threads (CPU); default: all cores of this process
    keep_freed_memory: bool = True  # glibc: reuse freed memory, no page faults per step (pipeline.training.allocator)
    push_to_hub: bool = False
    hub_model_id: str | None = None


@dataclass
class EvalConfig:
    batch_seconds: float | None = None  # padded audio seconds per batch; None: 30 on CPU, 240 on GPU
    max_batch_size: int = 64
    max_utterances: int | None = None  # periodic evaluation on a subset (final evaluation uses all)
    examples: int = 3  # transcripts printed after training


@dataclass
class SSLConfig:
    """Self-supervised wav2vec 2.0 pretraining (task: ssl); ignored by the other tasks.

    Masking: spans of `mask_time_length` frames start at a share `mask_time_prob / mask_time_length`
    of each utterance's real (unpadded) frames (the paper's p=0.065, M=10: about half of the frames
    masked). The Gumbel temperature of the quantizer decays per optimizer step from
    `max_gumbel_temperature` by `gumbel_temperature_decay` down to `min_gumbel_temperature`.
    """

    mask_time_prob: float = 0.65
    mask_time_length: int = 10
    mask_time_min_masks: int = 2  # spans per utterance at least (when it is long enough)
    num_negatives: int = 100  # distractors per masked frame, drawn from the same utterance's masked frames
    contrastive_logits_temperature: float = 0.1
    diversity_loss_weight: float = 0.1
    max_gumbel_temperature: float = 2.0
    min_gumbel_temperature: float = 0.5
    gumbel_temperature_decay: float = 0.999995
    # warn when the codevector perplexity falls below this share of the codebook (groups x entries)
    collapse_warning_ratio: float = 0.1
    eval_seed: int = 1234  # masks and distractors of the evaluation split: the same at every evaluation


@dataclass
class VocoderConfig:
    """Diffusion vocoder training and sampling (task: vocoder); ignored by the other tasks.

    The network's size comes from `model.config` (`{preset: small}`, optionally with DiffWave keys such as
    `residual_layers`); `model.name_or_path` continues from a saved vocoder directory instead.
    """

    mel: str = "speecht5"  # mel preset (pipeline.tts.mel.PRESETS): speecht5 | ljspeech | hifigan
    crop_min_samples: int = 8000  # each batch trains on random crops of a length in [min, max] (whole hops)
    crop_max_samples: int = 16000
    loss: Literal["l1", "l2"] = "l1"  # on the predicted noise, summed over the crop's samples
    prior: bool = False  # PriorGrad: noise N(0, sigma^2), sigma from the normalised frame energy
    prior_min_std: float = 0.1
    # SpecGrad-style prior: noise shaped by the mel's time-frequency envelope (excludes `prior`)
    spectral_prior: bool = False
    spectral_floor: float = 1e-3  # the envelope's floor, a share of each frame's peak
    sampler: Literal["fast", "ddim", "dpm", "ddpm"] = "fast"  # default sampler saved with the model
    steps: int = 6
    eval_utterances: int = 4  # held-out utterances vocoded at each evaluation
    eval_max_seconds: float = 4.0  # each is cut to this length
    samples: int = 2  # utterances written (wav + spectrogram PNG) to output_dir/samples/ at an evaluation
    sample_every: int = 1  # write samples at every N-th evaluation (0: never)


@dataclass
class AcousticConfig:
    """FastSpeech2Conformer text-to-mel training (task: acoustic); ignored by the other tasks.

    The network's size comes from `model.config` (`{preset: small}`, optionally with
    FastSpeech2ConformerConfig keys). Targets use the vocoder's mel preset `mel`; durations come from
    espeak-ng phoneme events of a synthetic corpus (pipeline.tts.phonemes).
    """

    mel: str = "speecht5"  # mel preset of the vocoder it will sit in front of (pipeline.tts.mel.PRESETS)
    # espeak: phoneme events of a synthetic corpus; ctc: forced alignment of recordings with `aligner`
    durations: Literal["espeak", "ctc"] = "espeak"
    aligner: str | None = None  # character CTC model (a directory this toolkit trained, or a Hub id) for ctc
    voice: str = "en-us"  # espeak-ng voice that phonemises text at inference
    stats_utterances: int = 200  # training utterances the mel/pitch/energy normalisation is measured on
    # One voice per speaker: a speaker embedding per value of the data's `speaker` column (train split).
    # Without it the model learns one average voice of the whole corpus.
    speakers: bool = False
    speaker: str | None = None  # the voice it speaks in by default (None: the training speaker with most utterances)
    f0_min: float = 60.0  # Hz, pitch tracker search range
    f0_max: float = 500.0


@dataclass
class Recipe:
    output_dir: str
    task: str = "asr"
    seed: int = 0
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    acoustic: AcousticConfig = field(default_factory=AcousticConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Reading


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}:{where}: malformed YAML: {problem}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is not None:
        base_path = (path.parent / str(base)).resolve()
        if base_path in seen:
            raise RecipeError(f"{path}: 'base' forms a cycle through {base_path}")
        merged = _read_yaml(base_path, seen + (path.resolve(),))
        _deep_update(merged, raw)
        raw = merged
    return raw


def _deep_update(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict) and key != "config":
            _deep_update(dst[key], value)
        else:
            dst[key] = value


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.learning_rate=3e-4` -> (["train", "learning_rate"], 0.0003)."""
    if "=" not in text:
        raise RecipeError(f"override {text!r}: expected KEY=VALUE, e.g. train.max_steps=100")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                # e.g. data.train=folder then data.train.split=x: promote the string spec to a mapping
                if isinstance(child, str):
                    child = node[part] = {"path": child}
                else:
                    raise RecipeError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
        # A model given on the command line replaces an inline architecture from the recipe.
        if parts == ["model", "name_or_path"] and value:
            raw.get("model", {}).pop("config", None)
    return raw


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


_YAML_BOOL_WORDS = {False: ("no", "off", "false"), True: ("yes", "on", "true")}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except RecipeError as exc:
                errors.append(str(exc))
        raise RecipeError(errors[-1] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool):  # YAML 1.1 reads `no`/`off` as false: mixed_precision=no means "no"
            value = next((c for c in _YAML_BOOL_WORDS[value] if c in choices), value)
        if value not in choices:
            raise RecipeError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if dataclasses.is_dataclass(tp):
        if tp is DataSpec and isinstance(value, str):
            value = {"path": value}
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a mapping of keys, got {value!r}")
        return build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise RecipeError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise RecipeError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise RecipeError(f"{key}: expected a string, got {value!r}")
    raise RecipeError(f"{key}: unsupported type {_type_name(tp)}")


def build(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys by their dotted name."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            known = ", ".join(sorted(names))
            raise RecipeError(f"unknown recipe key {dotted!r} (known here: {known})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in raw:
            kwargs[f.name] = _coerce(raw[f.name], hints[f.name], dotted)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"missing recipe key {dotted!r}")
    return cls(**kwargs)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    raw = _read_yaml(Path(path))
    raw = apply_overrides(raw, list(overrides or []))
    recipe = build(Recipe, raw)
    validate(recipe)
    return recipe


def recipe_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> Recipe:
    raw = apply_overrides(dict(raw), list(overrides or []))
    recipe = build(Recipe, raw)
    validate(recipe)
    return recipe


def validate(recipe: Recipe) -> None:
    t = recipe.train
    if t.learning_rate <= 0:
        raise RecipeError(f"train.learning_rate: must be positive, got {t.learning_rate}")
    if t.batch_seconds <= 0:
        raise RecipeError(f"train.batch_seconds: must be positive, got {t.batch_seconds}")
    if t.gradient_accumulation < 1:
        raise RecipeError("train.gradient_accumulation: must be at least 1")
    if t.max_steps is not None and t.max_steps < 0:
        raise RecipeError("train.max_steps: must be 0 or more")
    if t.sortagrad_epochs < 0:
        raise RecipeError("train.sortagrad_epochs: must be >= 0")
    if not 0 <= t.max_padding < 1:
        raise RecipeError("train.max_padding: must be in [0, 1)")
    if not 0 <= t.muon_momentum < 1 or t.muon_ns_steps < 1:
        raise RecipeError(f"train.muon_momentum must be in [0, 1) and train.muon_ns_steps >= 1, got {t.muon_momentum} "
                          f"and {t.muon_ns_steps}")
    if t.optimizer in ("muon", "auto") and t.muon_convolutions and t.mixed_precision == "fp16":
        # fp16's gradient scaler unscales and checks the optimizer's own parameters: the flattened kernels are
        # stand-ins, so their gradients would reach clipping still scaled
        raise RecipeError("train.muon_convolutions=true does not work with train.mixed_precision=fp16: use bf16 or "
                          "train.muon_convolutions=false")
    if t.early_stopping_patience < 0 or t.early_stopping_min_delta < 0:
        raise RecipeError("train.early_stopping_patience and train.early_stopping_min_delta: must be >= 0")
    if (t.final_model == "best" or t.early_stopping_patience) and recipe.data.eval is None:
        setting = "train.final_model=best" if t.final_model == "best" else "train.early_stopping_patience"
        raise RecipeError(f"{setting} needs periodic evaluations: set data.eval (a held-out split)")
    if t.best_metric is not None and t.best_metric.startswith("eval_"):
        raise RecipeError(f"train.best_metric: name the metric without 'eval_' (e.g. {t.best_metric[5:]!r})")
    if t.gradient_checkpointing and recipe.task in ("vocoder", "acoustic"):
        raise RecipeError(f"train.gradient_checkpointing: the {recipe.task} task's model does not support it "
                          "(the ASR and SSL models do)")
    if not 0 <= recipe.model.inter_ctc_weight < 1:
        raise RecipeError(f"model.inter_ctc_weight: must be in [0, 1), got {recipe.model.inter_ctc_weight}")
    for key in ("speed", "tempo"):
        span = getattr(recipe.data.augment, key)
        if span is not None and (len(span) != 2 or not 0 < span[0] <= span[1]):
            raise RecipeError(f"data.augment.{key}: expected [low, high] with 0 < low <= high, got {span}")
    if not 0 <= recipe.data.augment.vtlp < 0.5:
        raise RecipeError("data.augment.vtlp: must be in [0, 0.5)")
    if not 0 <= recipe.data.augment.trim <= 1 or recipe.data.augment.trim_db <= 0:
        raise RecipeError("data.augment.trim must be a probability in [0, 1] and data.augment.trim_db positive (dB)")
    a = recipe.data.augment
    # what each task's training input can take (the vocoder's and the acoustic model's targets are the audio)
    usable = {"asr": AUGMENTATIONS, "ssl": ("speed", "noise", "reverb")}.get(recipe.task, ())
    for key in AUGMENTATIONS:
        if getattr(a, key) and key not in usable:
            raise RecipeError(f"data.augment.{key}: the {recipe.task} task does not augment its training audio"
                              + (f" with it (it can: {', '.join(usable)})" if usable else ""))
    for key in ("noise_prob", "reverb_prob"):
        if not 0 <= getattr(a, key) <= 1:
            raise RecipeError(f"data.augment.{key}: must be a probability in [0, 1], got {getattr(a, key)}")
    if len(a.noise_snr) != 2 or a.noise_snr[0] > a.noise_snr[1]:
        raise RecipeError(f"data.augment.noise_snr: expected [low, high] in dB with low <= high, got {a.noise_snr}")
    if len(a.reverb_rt60) != 2 or not 0 < a.reverb_rt60[0] <= a.reverb_rt60[1] <= 10:
        raise RecipeError(f"data.augment.reverb_rt60: expected [low, high] seconds with 0 < low <= high <= 10, got {a.reverb_rt60}")
    s = recipe.ssl
    if not 0 < s.mask_time_prob <= 1 or s.mask_time_length < 1 or s.mask_time_min_masks < 0:
        raise RecipeError("ssl.mask_time_prob must be in (0, 1], ssl.mask_time_length >= 1, ssl.mask_time_min_masks >= 0")
    if s.num_negatives < 1:
        raise RecipeError("ssl.num_negatives: must be at least 1")
    if not 0 < s.min_gumbel_temperature <= s.max_gumbel_temperature or not 0 < s.gumbel_temperature_decay <= 1:
        raise RecipeError("ssl: need 0 < min_gumbel_temperature <= max_gumbel_temperature and 0 < gumbel_temperature_decay <= 1")
    v = recipe.vocoder
    if not 0 < v.crop_min_samples <= v.crop_max_samples:
        raise RecipeError("vocoder: need 0 < crop_min_samples <= crop_max_samples")
    if v.steps < 1 or v.eval_utterances < 0 or v.samples < 0 or v.sample_every < 0 or v.prior_min_std <= 0:
        raise RecipeError("vocoder: steps must be >= 1, eval_utterances/samples/sample_every >= 0, prior_min_std > 0")
    if v.prior and v.spectral_prior:
        raise RecipeError("vocoder: prior (PriorGrad) and spectral_prior exclude each other: choose one")
    if not 0 < v.spectral_floor < 1:
        raise RecipeError("vocoder.spectral_floor: must be in (0, 1)")
    ac = recipe.acoustic
    if ac.stats_utterances < 1 or not 0 < ac.f0_min < ac.f0_max:
        raise RecipeError("acoustic: need stats_utterances >= 1 and 0 < f0_min < f0_max")
    if recipe.data.min_duration > recipe.data.max_duration:
        raise RecipeError("data.min_duration is larger than data.max_duration")
    if recipe.model.name_or_path is None and recipe.model.config is None:
        raise RecipeError("model: set model.name_or_path (Hub id or directory) or an inline model.config")


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
