"""Self-supervised wav2vec 2.0 pretraining (contrastive + diversity loss) on unlabelled audio.

The task plugs into the shared loop like ASR does. Any data spec works with its transcripts
ignored (`need_text=False`), and so does a plain folder of audio files without metadata. Each batch
carries span masks and distractor indices computed from the *sub-sampled* attention mask, so no
padding frame is ever masked, predicted or used as a distractor (see pipeline.models.ssl).

The loss handed to the loop is summed over masked frames and paired with their number, so the loop
normalises globally: contrastive loss per masked frame, plus `ssl.diversity_loss_weight` times the
diversity term, which is itself scaled by the micro-batch's masked frames (its per-frame average
over the optimizer step is then weighted like the contrastive term). The quantizer's Gumbel
temperature follows the optimizer step (`on_step_start`), so a resumed run continues the schedule.
Per-window metrics (contrastive and diversity loss, codevector perplexity, temperature, masked
share) reach the training log through `step_metrics`; a codebook collapse is a warning.

Augmentation: `data.augment.speed`, `noise` and `reverb` apply to the training waveforms as in ASR (pretraining
on corrupted audio is one way to a representation that holds up in noise and rooms); the other keys work on
log-mel features and are recipe errors here.

The output directory is a `Wav2Vec2ForPreTraining` (or Conformer) checkpoint with its feature
extractor: the ASR recipes take it as `model.name_or_path` (a new CTC head is created). Its config
carries fine-tuning masking defaults (mask_time_prob 0.05), not the pretraining ones.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from pipeline.audio import read_audio
from pipeline.config import Recipe
from pipeline.data.augment import augment_input
from pipeline.data.batching import eval_batches, sorted_shards
from pipeline.data.noise import training_corruptor
from pipeline.data.prepare import SkipReport, prepare_split
from pipeline.data.sources import describe_spec, load_spec
from pipeline.errors import DataError, RecipeError
from pipeline.evaluation.evaluate import PIPELINE_META, default_cache_dir
from pipeline.evaluation.inference import default_batch_seconds, pad_features
from pipeline.io import write_json, write_text
from pipeline.models.asr import FAMILIES, load_feature_extractor
from pipeline.models.ssl import (
    build_pretraining_model,
    codebook_size,
    compute_span_mask,
    contrastive_logits,
    gumbel_temperature,
    perplexity_from_counts,
    sample_negatives,
    ssl_family,
)
from pipeline.tasks.base import ModelHolder, render_model_card

logger = logging.getLogger(__name__)

# Masking values written into the saved config: what a CTC fine-tuning run starts from (the
# Wav2Vec2Config defaults and facebook/wav2vec2-base's), not the pretraining ones (0.65).
FINETUNE_MASKING = {"mask_time_prob": 0.05, "mask_time_length": 10, "mask_time_min_masks": 2}


class SSLTask(ModelHolder):
    name = "ssl"
    main_metric = "contrastive_loss"

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.ssl = recipe.ssl
        self._model: torch.nn.Module | None = None
        self.report = SkipReport()
        self._window = self._empty_window()
        self._collapsed = False
        self._temperature = self.ssl.max_gumbel_temperature

    # ---------------------------------------------------------------------------------------
    def setup(self, accelerator: Accelerator) -> None:
        r = self.recipe
        d, m = r.data, r.model
        if d.train is None:
            raise RecipeError("data.train: the (unlabelled) training audio is missing")
        self.family = ssl_family(m)
        self.feature_extractor = load_feature_extractor(FAMILIES[self.family], m)
        if not getattr(self.feature_extractor, "do_normalize", True):
            logger.warning("the feature extractor does not normalise the waveform (do_normalize=false): wav2vec 2.0 "
                           "pretraining expects zero-mean unit-variance input")
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        common = dict(normalize=lambda t: t, min_duration=d.min_duration, max_duration=d.max_duration, need_text=False,
                      on_bad_rows=d.on_bad_rows, cache_dir=d.cache_dir or default_cache_dir(), num_proc=d.num_proc)
        with accelerator.main_process_first():
            self.train = prepare_split(load_spec(d.train, need_text=False), "train", describe_spec(d.train),
                                       self.report, **common)
            self.eval = None
            if d.eval is not None:
                self.eval = prepare_split(load_spec(d.eval, need_text=False), "eval", describe_spec(d.eval),
                                          self.report, **common)
            self._corrupt = training_corruptor(d.augment, self.sample_rate, self.report, common)
        logger.info("data: %s", self.report.summary())
        if accelerator.is_main_process:
            Path(r.output_dir).mkdir(parents=True, exist_ok=True)
            self.report.write(Path(r.output_dir) / "data_report.json")
        self._model = build_pretraining_model(self.family, m, self.ssl)
        self._model.set_gumbel_temperature(self._temperature)
        self._durations = [float(x) for x in self.train["duration"]]
        self._audio = self.train["audio"]
        self.unlabelled_hours = sum(self._durations) / 3600
        self._feature_cache: dict[int, np.ndarray] = {}
        self._cache_bytes = 0
        self._cache_limit = int(r.train.feature_cache_gb * 2**30)
        frames = self._frames([round(x * self.sample_rate) for x in self._durations])
        short = sum(1 for f in frames if f < self.ssl.mask_time_length + 1)
        if short:
            logger.warning("%d of %d training utterances have fewer than %d frames (ssl.mask_time_length + 1): they are "
                           "never masked and add nothing to the loss (raise data.min_duration to drop them)",
                           short, len(frames), self.ssl.mask_time_length + 1)
        n = sum(p.numel() for p in self._model.parameters())
        logger.info("model: %s pretraining, %.2f M parameters, codebook %d groups x %d entries, %.2f h of unlabelled audio",
                    self.family, n / 1e6, self._model.config.num_codevector_groups,
                    self._model.config.num_codevectors_per_group, self.unlabelled_hours)

    def train_example(self, index: int) -> dict[str, Any]:
        return {"index": index, "audio": self._audio[index], "duration": self._durations[index]}

    # ---------------------------------------------------------------------------------------
    def _frames(self, samples: list[int]) -> list[int]:
        lengths = self.model._get_feat_extract_output_lengths(torch.tensor(samples, dtype=torch.long))
        return [int(x) for x in lengths]

    def _extract(self, audio: np.ndarray) -> np.ndarray:
        key = self.feature_extractor.model_input_names[0]
        return self.feature_extractor(audio, sampling_rate=self.sample_rate, return_tensors="np")[key][0].astype(np.float32)

    def _waveform(self, row: dict[str, Any], cache: bool = True) -> np.ndarray:
        index = row.get("index")
        cached = self._feature_cache.get(index) if cache and index is not None else None
        if cached is not None:
            return cached
        x = self._extract(read_audio(row["audio"], self.sample_rate)[0])
        if cache and index is not None and self._cache_bytes + x.nbytes <= self._cache_limit:
            self._feature_cache[index] = x
            self._cache_bytes += x.nbytes
        return x

    def _train_input(self, row: dict[str, Any]) -> np.ndarray:
        """A training utterance's model input: the cached clean one, or its reverberant / noisy audio's; then sped
        up or slowed down (`data.augment.speed`) when the recipe says so."""
        drawn = self._corrupt.maybe(row["audio"])
        x = self._waveform(row) if drawn is None else self._extract(drawn[1])
        return augment_input(x, self.recipe.data.augment, self.sample_rate) if self.recipe.data.augment.speed else x

    def _batch(self, waves: list[np.ndarray], generators: list[torch.Generator] | None = None) -> dict[str, Any]:
        key = self.feature_extractor.model_input_names[0]
        batch: dict[str, Any] = pad_features(waves, float(getattr(self.feature_extractor, "padding_value", 0.0)), key)
        model = self.model
        frames = int(model._get_feat_extract_output_lengths(batch[key].shape[1]))
        sub = model._get_feature_vector_attention_mask(frames, batch["attention_mask"])
        s = self.ssl
        mask = compute_span_mask(sub, s.mask_time_prob, s.mask_time_length, s.mask_time_min_masks, generators)
        batch["sub_attention_mask"] = sub
        batch["mask_time_indices"] = mask
        batch["sampled_negative_indices"] = sample_negatives(mask, s.num_negatives, generators)
        batch["units"] = int(mask.sum())
        return batch

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        waves, seconds = [], 0.0
        for row in rows:
            try:
                waves.append(self._train_input(row))
                seconds += float(row.get("duration", 0.0))
            except DataError as exc:  # changed on disk since it was measured: skip, never crash mid-run
                logger.warning("skipping an utterance during training: %s", exc)
        if not waves:
            return None
        batch = self._batch(waves)
        batch["audio_seconds"] = seconds
        return batch

    def _forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> Any:
        device = next(model.parameters()).device
        key = self.feature_extractor.model_input_names[0]
        return model(**{key: batch[key].to(device)}, attention_mask=batch["attention_mask"].to(device),
                     mask_time_indices=batch["mask_time_indices"].to(device),
                     sampled_negative_indices=batch["sampled_negative_indices"].to(device))

    # ---------------------------------------------------------------------------------------
    def on_step_start(self, model: torch.nn.Module, step: int) -> None:
        """Loop hook: the Gumbel temperature of optimizer step `step` (0-based)."""
        self._temperature = gumbel_temperature(self.ssl, step)
        model.set_gumbel_temperature(self._temperature)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._forward(model, batch)
        n = int(batch["units"])
        if n == 0:  # only utterances too short to mask: keep the graph (DDP), add nothing
            return out.projected_states.sum() * 0.0, torch.tensor(0.0)
        size = codebook_size(self.model.config)
        perplexity = out.codevector_perplexity.float()
        contrastive = out.contrastive_loss.float()
        diversity = (size - perplexity) / size * n  # the library's L_d, summed over masked frames like L_m
        total = contrastive + self.ssl.diversity_loss_weight * diversity
        w = self._window
        w["contrastive"] += float(contrastive.detach())
        w["diversity"] += float(diversity.detach())
        w["perplexity"] += float(perplexity.detach()) * n
        w["masked"] += n
        w["frames"] += float(batch["sub_attention_mask"].sum())
        return total, torch.tensor(float(n))

    @staticmethod
    def _empty_window() -> dict[str, float]:
        return dict.fromkeys(("contrastive", "diversity", "perplexity", "masked", "frames"), 0.0)

    def step_metrics(self) -> dict[str, float]:
        """Loop hook: metrics of the training steps since the last call (the same keys on every process)."""
        w, self._window = self._window, self._empty_window()
        n = max(w["masked"], 1.0)
        metrics = {"contrastive_loss": w["contrastive"] / n, "diversity_loss": w["diversity"] / n,
                   "codevector_perplexity": w["perplexity"] / n, "gumbel_temperature": self._temperature,
                   "masked_share": w["masked"] / max(w["frames"], 1.0)}
        if w["masked"]:
            self._check_collapse(metrics["codevector_perplexity"], "training")
        return metrics

    def _check_collapse(self, perplexity: float, where: str) -> None:
        config = self.model.config
        size, groups = codebook_size(config), int(config.num_codevector_groups)
        floor = max(self.ssl.collapse_warning_ratio * size, 1.5 * groups)
        if perplexity < floor:
            if not self._collapsed:
                logger.warning(
                    "codebook collapse: %s codevector perplexity %.1f of %d possible (%d groups x %d entries; near %d means "
                    "one entry per group): the quantizer uses few codes and the contrastive task becomes trivial. "
                    "Raise ssl.diversity_loss_weight, lower the learning rate, or keep the Gumbel temperature higher "
                    "for longer (ssl.gumbel_temperature_decay closer to 1)",
                    where, perplexity, size, groups, config.num_codevectors_per_group, groups)
            self._collapsed = True
        elif self._collapsed and perplexity > 1.5 * floor:
            logger.info("codevector perplexity recovered: %.1f of %d", perplexity, size)
            self._collapsed = False

    # ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, accelerator: Accelerator, model: torch.nn.Module, limit: int | None = None) -> dict[str, Any]:
        """Contrastive loss and accuracy (positive ranked first among 1 + K) on masked eval frames.

        Masks and distractors come from one generator per utterance seeded with ssl.eval_seed and the
        row, so every evaluation (and any number of processes) scores the same task. The code
        perplexity counts the quantizer's hard choices over all masked frames of the split.
        """
        if self.eval is None:
            return {}
        table = self.eval
        indices = list(range(len(table)))
        if limit is not None and limit < len(table):
            indices = np.linspace(0, len(table) - 1, limit).round().astype(int).tolist()
        durations = [float(table[i]["duration"]) for i in indices]
        mine = [indices[j] for j in sorted_shards(durations, accelerator.num_processes, accelerator.process_index)]
        all_durations = table["duration"]
        config = self.model.config
        groups, entries = int(config.num_codevector_groups), int(config.num_codevectors_per_group)
        counts = torch.zeros(groups, entries, dtype=torch.float64)
        current: dict[str, torch.Tensor] = {}
        hook = model.quantizer.weight_proj.register_forward_hook(lambda _m, _i, out: current.__setitem__("logits", out))
        sums = torch.zeros(3, dtype=torch.float64)  # loss, correct, masked frames
        was_training = model.training
        model.eval()
        try:
            e = self.recipe.eval
            budget = e.batch_seconds if e.batch_seconds is not None else default_batch_seconds(accelerator.device)
            for batch_rows in eval_batches(mine, all_durations, budget, e.max_batch_size):
                waves = [self._waveform({"audio": table[i]["audio"]}, cache=False) for i in batch_rows]
                gens = [torch.Generator().manual_seed(self.ssl.eval_seed * 1_000_003 + i) for i in batch_rows]
                batch = self._batch(waves, gens)
                if batch["units"] == 0:
                    continue
                out = self._forward(model, batch)
                mask = batch["mask_time_indices"].to(out.projected_states.device)
                logits = contrastive_logits(model, out.projected_states, out.projected_quantized_states,
                                            batch["sampled_negative_indices"].to(mask.device), mask)
                target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
                sums[0] += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
                sums[1] += float((logits.argmax(-1) == 0).sum())
                sums[2] += float(mask.sum())
                codes = current["logits"].float().view(*mask.shape, groups, entries).argmax(-1)[mask].cpu()  # (N, G)
                for g in range(groups):
                    counts[g] += torch.bincount(codes[:, g], minlength=entries).double()
        finally:
            hook.remove()
            if was_training:
                model.train()
        if accelerator.num_processes > 1:
            sums = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu()
            counts = accelerator.reduce(counts.to(accelerator.device), reduction="sum").cpu()
        if not accelerator.is_main_process:
            return {}
        n = float(sums[2])
        if n == 0:
            logger.warning("evaluation: no utterance of the eval split is long enough to mask")
            return {}
        perplexity = perplexity_from_counts(counts)
        self._check_collapse(perplexity, "evaluation (hard codes)")
        return {"contrastive_loss": float(sums[0]) / n, "accuracy": float(sums[1]) / n,
                "code_perplexity": perplexity, "masked_frames": int(n)}

    # ---------------------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, output_dir: Path, metrics: dict[str, Any]) -> None:
        """A pretraining checkpoint + feature extractor that the ASR task fine-tunes (new CTC head)."""
        config = model.config
        saved = {k: getattr(config, k) for k in FINETUNE_MASKING}
        for k, v in FINETUNE_MASKING.items():
            setattr(config, k, v)
        try:
            model.save_pretrained(output_dir, safe_serialization=True)
        finally:
            for k, v in saved.items():
                setattr(config, k, v)
        self.feature_extractor.save_pretrained(output_dir)
        meta = {"task": "ssl", "family": self.family, "sample_rate": self.sample_rate,
                "train_data": describe_spec(self.recipe.data.train), "unlabelled_hours": round(self.unlabelled_hours, 4),
                "steps": metrics.get("steps"), "ssl": dataclasses.asdict(self.ssl)}
        write_json(Path(output_dir) / PIPELINE_META, meta)
        write_text(Path(output_dir) / "README.md", model_card(self.recipe, self.family, metrics, self.report,
                                                              self.unlabelled_hours))
        if self.recipe.train.push_to_hub:
            repo = self.recipe.train.hub_model_id or Path(output_dir).name
            model.push_to_hub(repo)
            self.feature_extractor.push_to_hub(repo)


def model_card(recipe: Recipe, family: str, metrics: dict[str, Any], report: SkipReport, hours: float) -> str:
    d = recipe.data
    loss, acc = metrics.get("eval_contrastive_loss"), metrics.get("eval_accuracy")
    result = (f"| eval | {loss:.4f} | {acc:.4f} | {metrics.get('eval_code_perplexity', float('nan')):.1f} |"
              if isinstance(loss, float) and isinstance(acc, float) else "| eval | - | - | - |")
    body = [
        f"A {family} model pretrained self-supervised (wav2vec 2.0 objective) with speech-pipeline "
        f"(`scripts/train.py`, task ssl). {recipe.description}".strip(), "",
        "It has no CTC head: fine-tune it with an ASR recipe and `model.name_or_path=<this folder>`.", "",
        "## Data", "",
        f"- unlabelled audio: `{describe_spec(d.train) if d.train else '-'}`, {hours:.2f} h",
        f"- eval: `{describe_spec(d.eval) if d.eval else '-'}`",
        f"- {report.summary()}", "",
        "## Results", "",
        "| split | contrastive loss | accuracy (1 + K) | code perplexity |", "|---|---|---|---|", result, "",
    ]
    front = ["library_name: transformers", "tags: [wav2vec2, self-supervised, speech-pipeline]"]
    return render_model_card(recipe, front, body, metrics)
