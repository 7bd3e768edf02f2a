"""CTC speech recognition: any family of pipeline.models.asr on any data spec."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from pipeline.audio import read_audio, speech_span
from pipeline.config import Recipe
from pipeline.data.augment import augment_input
from pipeline.data.noise import training_corruptor
from pipeline.data.prepare import SkipReport, prepare_split
from pipeline.data.sources import describe_spec, load_spec
from pipeline.data.text import build_vocab, get_normalizer
from pipeline.errors import DataError, ModelError, RecipeError
from pipeline.evaluation.evaluate import PIPELINE_META, default_cache_dir, score, transcribe_table
from pipeline.evaluation.inference import Transcriber, output_mask, pad_features, utterance_features
from pipeline.io import write_json, write_text
from pipeline.models.asr import (
    build_model,
    character_tokenizer,
    detect_family,
    inter_ctc_layer,
    load_checkpoint_tokenizer,
    load_feature_extractor,
    output_layer,
    preflight,
    subword_tokenizer,
)
from pipeline.tasks.base import ModelHolder, render_model_card

logger = logging.getLogger(__name__)


def _oov_checker(tokenizer: Any) -> Any:
    unk = tokenizer.unk_token_id

    def check(text: str) -> str | None:
        if unk is None:
            return None
        ids = tokenizer(text).input_ids
        if unk in ids:
            bad = sorted({ch for ch in text if ch != " " and tokenizer(ch).input_ids and unk in tokenizer(ch).input_ids})
            return f"characters outside the tokenizer's vocabulary: {''.join(bad)!r}"
        return None

    return check


def _optional_tokenizer(m: Any) -> Any:
    try:
        return load_checkpoint_tokenizer(m)
    except ModelError:
        return None


def _mask_spans(features: torch.Tensor, lengths: list[int], prob: float, span: int, axis: int) -> None:
    """SpecAugment-style masking of log-mel features in place (families without built-in masking)."""
    for i, n in enumerate(lengths):
        size = n if axis == 1 else features.shape[2]
        count = int(prob * size / max(span, 1) + torch.rand(()).item())
        for _ in range(count):
            width = int(torch.randint(1, span + 1, ()).item())
            start = int(torch.randint(0, max(size - width, 1), ()).item())
            if axis == 1:
                features[i, start : start + width, :] = 0.0
            else:
                features[i, :n, start : start + width] = 0.0


class ASRTask(ModelHolder):
    name = "asr"
    main_metric = "wer"

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self._model: torch.nn.Module | None = None
        self.report = SkipReport()

    # ---------------------------------------------------------------------------------------
    def setup(self, accelerator: Accelerator) -> None:
        r = self.recipe
        d, m = r.data, r.model
        if d.train is None:
            raise RecipeError("data.train: the training data spec is missing")
        self.family = detect_family(m)
        self.feature_extractor = load_feature_extractor(self.family, m)
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        normalize = get_normalizer(d.normalizer)
        common = dict(normalize=normalize, min_duration=d.min_duration, max_duration=d.max_duration, need_text=True,
                      on_bad_rows=d.on_bad_rows, cache_dir=d.cache_dir or default_cache_dir(), num_proc=d.num_proc)
        with accelerator.main_process_first():  # the main process measures audio once; the others read the cache
            tokenizer = None
            if m.tokenizer == "checkpoint":
                tokenizer = load_checkpoint_tokenizer(m)
            elif m.tokenizer == "auto" and m.name_or_path:
                tokenizer = _optional_tokenizer(m)
            strict = m.tokenizer == "checkpoint"
            self.train = prepare_split(load_spec(d.train), "train", describe_spec(d.train), self.report,
                                       check_text=_oov_checker(tokenizer) if tokenizer and strict else None, **common)
            if tokenizer is not None and not strict:
                missing = [t for t in set(self.train["text"]) if _oov_checker(tokenizer)(t)]
                if missing:
                    logger.info("the checkpoint's tokenizer does not cover the training text (%s): building a "
                                "character vocabulary and a new head", _oov_checker(tokenizer)(missing[0]))
                    tokenizer = None
            keep_tokenizer = tokenizer is not None
            if tokenizer is None and m.tokenizer == "subwords":  # from the train split only, like characters
                tokenizer = subword_tokenizer(list(self.train["text"]), m.vocab_size, blank_last=self.family.blank_last)
            elif tokenizer is None:  # the vocabulary comes from the train split only: no evaluation text leaks in
                tokenizer = character_tokenizer(build_vocab(self.train["text"], blank_last=self.family.blank_last))
            self.eval = None
            if d.eval is not None:
                self.eval = prepare_split(load_spec(d.eval), "eval", describe_spec(d.eval), self.report, **common)
            self._corrupt = training_corruptor(d.augment, self.sample_rate, self.report, common)
        self.tokenizer = tokenizer
        logger.info("data: %s", self.report.summary())
        if accelerator.is_main_process:
            Path(r.output_dir).mkdir(parents=True, exist_ok=True)
            self.report.write(Path(r.output_dir) / "data_report.json")
        self._model = build_model(self.family, m, tokenizer, keep_head=keep_tokenizer)
        preflight(self._model, tokenizer, where=m.name_or_path or "model.config")
        if m.inter_ctc_weight:
            self._inter_ctc_layer = inter_ctc_layer(self.family, self._model, m.inter_ctc_layer)
        self._durations = [float(x) for x in self.train["duration"]]
        self._audio = self.train["audio"]
        self._text = self.train["text"]
        self._wav2vec2_masking = self.family.has_wav2vec2_masking
        self._augment = r.data.augment
        self._augment_on = bool(self._augment.speed or self._augment.vtlp or self._augment.tempo or self._augment.trim)
        self._standardized = bool(getattr(self.feature_extractor, "do_normalize", True))
        self._speech: dict[int, tuple[int, int] | None] = {}
        for key, what in (("vtlp", "vocal-tract-length perturbation"), ("tempo", "tempo perturbation")):
            if getattr(self._augment, key) and self.feature_extractor.model_input_names[0] == "input_values":
                raise RecipeError(f"data.augment.{key}: the {self.family.name} family reads raw waveforms; "
                                  f"{what} needs log-mel inputs (use data.augment.speed)")
        self._feature_cache: dict[int, np.ndarray] = {}
        self._cache_bytes = 0
        self._cache_limit = int(r.train.feature_cache_gb * 2**30)
        n = sum(p.numel() for p in self._model.parameters())
        logger.info("model: %s, %.2f M parameters, vocabulary %d, blank id %d", self.family.name, n / 1e6, len(tokenizer),
                    tokenizer.pad_token_id)

    def train_example(self, index: int) -> dict[str, Any]:
        return {"index": index, "audio": self._audio[index], "text": self._text[index], "duration": self._durations[index]}

    # ---------------------------------------------------------------------------------------
    def _features(self, row: dict[str, Any]) -> np.ndarray:
        """One utterance's model input, computed once and kept in memory while the cache budget allows."""
        index = row.get("index")
        cached = self._feature_cache.get(index) if index is not None else None
        if cached is not None:
            return cached
        audio = read_audio(row["audio"], self.sample_rate)[0]
        feats, valid = utterance_features(self.feature_extractor, audio)  # exactly what inference computes
        feats = feats[:valid].astype(np.float32, copy=False)
        if self._augment.trim and index is not None:
            self._speech[index] = self._speech_frames(audio, feats)
        if index is not None and self._cache_bytes + feats.nbytes <= self._cache_limit:
            self._feature_cache[index] = feats
            self._cache_bytes += feats.nbytes
        return feats

    def _input(self, row: dict[str, Any]) -> np.ndarray:
        """One training utterance's model input: cached clean features, or features of its reverberant / noisy audio."""
        drawn = self._corrupt.maybe(row["audio"])
        if drawn is None:
            return self._features(row)
        clean, corrupted = drawn
        feats, valid = utterance_features(self.feature_extractor, corrupted)
        feats = feats[:valid].astype(np.float32, copy=False)
        index = row.get("index")
        if self._augment.trim and index is not None and index not in self._speech:
            self._speech[index] = self._speech_frames(clean, feats)  # as long as the clean features: same samples
        return feats

    def _speech_frames(self, audio: np.ndarray, feats: np.ndarray) -> tuple[int, int] | None:
        """The loud span of `audio` in the units of the model input's first axis (samples or feature frames).

        Scaled by the input's own length, so it holds for every front-end (raw samples, a 10-ms or 8-ms hop,
        stacked frames) without knowing its hop.
        """
        span = speech_span(audio, self.sample_rate, -self._augment.trim_db)
        if span is None:
            return None
        per_sample = len(feats) / audio.size
        return int(span[0] * per_sample), min(int(np.ceil(span[1] * per_sample)), len(feats))

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        feats, texts, seconds = [], [], 0.0
        for row in rows:
            try:
                x = self._input(row)
                if self._augment_on:
                    x = augment_input(x, self._augment, self.sample_rate, self._speech.get(row.get("index", -1)),
                                      self._standardized)
                feats.append(x)
                texts.append(row["text"])
                seconds += float(row.get("duration", 0.0))
            except DataError as exc:  # changed on disk since it was measured: skip, never crash mid-run
                logger.warning("skipping an utterance during training: %s", exc)
        if not feats:
            return None
        batch: dict[str, Any] = pad_features(feats, float(getattr(self.feature_extractor, "padding_value", 0.0)),
                                             self.feature_extractor.model_input_names[0])
        m = self.recipe.model
        if not self._wav2vec2_masking and (m.mask_time_prob or m.mask_feature_prob):
            feats, lengths = batch[self.feature_extractor.model_input_names[0]], batch["attention_mask"].sum(-1).tolist()
            if m.mask_time_prob:
                _mask_spans(feats, lengths, m.mask_time_prob, m.mask_time_length or 10, axis=1)
            if m.mask_feature_prob:
                _mask_spans(feats, lengths, m.mask_feature_prob, m.mask_feature_length or 10, axis=2)
        ids = [self.tokenizer(t).input_ids for t in texts]
        longest = max(len(x) for x in ids)
        labels = torch.full((len(ids), longest), -100, dtype=torch.long)
        for i, x in enumerate(ids):
            labels[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        batch["labels"] = labels
        batch["units"] = sum(len(x) for x in ids)
        batch["audio_seconds"] = seconds
        return batch

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(model.parameters()).device
        key = self.feature_extractor.model_input_names[0]
        m = self.recipe.model
        attention_mask, labels = batch["attention_mask"].to(device), batch["labels"].to(device)
        out = model(**{key: batch[key].to(device)}, attention_mask=attention_mask, labels=labels,
                    output_hidden_states=bool(m.inter_ctc_weight))
        loss = out.loss.float()
        if m.inter_ctc_weight:
            hidden = out.hidden_states[self._inter_ctc_layer]
            base = getattr(model, "module", model)
            logits = output_layer(base)(hidden)
            frames = output_mask(model, attention_mask, attention_mask, logits.shape[1]).sum(-1)
            inter = base.loss_function(logits=logits, labels=labels, logit_lengths=frames,  # the model's own CTC loss
                                       blank_token_id=base.config.pad_token_id, reduction=base.config.ctc_loss_reduction,
                                       zero_infinity=base.config.ctc_zero_infinity).float()
            loss = (1 - m.inter_ctc_weight) * loss + m.inter_ctc_weight * inter
        return loss, torch.tensor(float(batch["units"]))

    # ---------------------------------------------------------------------------------------
    def evaluate(self, accelerator: Accelerator, model: torch.nn.Module, limit: int | None = None) -> dict[str, Any]:
        if self.eval is None:
            return {}
        table = self.eval
        if limit is not None and limit < len(table):
            table = table.select(np.linspace(0, len(table) - 1, limit).round().astype(int).tolist())
        e = self.recipe.eval
        transcriber = Transcriber(model, self.feature_extractor, self.tokenizer, device=accelerator.device,
                                  batch_seconds=e.batch_seconds, max_batch_size=e.max_batch_size)
        hyps = transcribe_table(accelerator, transcriber, table)
        if not accelerator.is_main_process:
            return {}
        metrics, _ = score(table, hyps, self.recipe.data.normalizer)
        return {"wer": metrics["wer"], "cer": metrics["cer"], "utterances": len(table)}

    # ---------------------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, output_dir: Path, metrics: dict[str, Any]) -> None:
        """A Hugging Face model directory that `transformers.pipeline` loads as it is."""
        model.save_pretrained(output_dir, safe_serialization=True)
        self.tokenizer.save_pretrained(output_dir)
        self.feature_extractor.save_pretrained(output_dir)
        meta = {"task": "asr", "family": self.family.name, "normalizer": self.recipe.data.normalizer,
                "sample_rate": self.sample_rate, "train_data": describe_spec(self.recipe.data.train)}
        write_json(Path(output_dir) / PIPELINE_META, meta)
        write_text(Path(output_dir) / "README.md", model_card(self.recipe, self.family.name, metrics, self.report))
        if self.recipe.train.push_to_hub:
            repo = self.recipe.train.hub_model_id or Path(output_dir).name
            model.push_to_hub(repo)
            self.tokenizer.push_to_hub(repo)
            self.feature_extractor.push_to_hub(repo)


def model_card(recipe: Recipe, family: str, metrics: dict[str, Any], report: SkipReport) -> str:
    d = recipe.data
    wer, cer = metrics.get("eval_wer"), metrics.get("eval_cer")
    body = [
        f"A {family} CTC model trained with speech-pipeline (`scripts/train.py`). {recipe.description}".strip(), "",
        "## Data", "",
        f"- train: `{describe_spec(d.train) if d.train else '-'}`",
        f"- eval: `{describe_spec(d.eval) if d.eval else '-'}`",
        f"- normalisation: `{d.normalizer}` (see `pipeline/data/text.py`); durations {d.min_duration}–{d.max_duration} s",
        f"- {report.summary()}", "",
        "## Results", "",
        "| split | WER | CER |", "|---|---|---|",
        f"| eval | {wer:.4f} | {cer:.4f} |" if isinstance(wer, float) and isinstance(cer, float) else "| eval | - | - |", "",
    ]
    usage = ["```python", "import soundfile as sf", "from transformers import pipeline", "",
             f'asr = pipeline("automatic-speech-recognition", model="{recipe.output_dir}")',
             'audio, sr = sf.read("speech.wav", dtype="float32")', 'print(asr({"raw": audio, "sampling_rate": sr})["text"])', "```", ""]
    front = ["library_name: transformers", "pipeline_tag: automatic-speech-recognition", "tags: [ctc, speech-pipeline]"]
    return render_model_card(recipe, front, body, metrics, usage)
