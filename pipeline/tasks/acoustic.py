"""FastSpeech2Conformer acoustic model (text -> mel), trained through the shared loop (task: acoustic).

Data: a synthetic espeak-ng corpus split (train/ or test/ of scripts/synth_corpus.py output): the
phonemes and their durations come from re-synthesising each utterance (pipeline.tts.phonemes);
utterances whose re-synthesis is not sample-exact are skipped and reported. With `acoustic.durations:
ctc`, any data spec of recordings with transcripts: durations by CTC forced alignment with the ASR model
`acoustic.aligner` (pipeline.tts.alignment); utterances it cannot align are skipped and reported.

Targets: the vocoder preset's log-mel (normalised per bin), per-phoneme durations in frames (they sum
to the frame count exactly), per-phoneme pitch and energy (pipeline.tts.acoustic). Features are
computed on first use and kept in memory within `train.feature_cache_gb`.

Loss: transformers' FastSpeech2Conformer loss (L1 on the mel before and after the post-net + MSE on
log durations, pitch and energy), a mean over the batch; the task returns it times the batch's mel
frames with units = frames, so the loop's global normalisation weighs batches by their frames.
Its parts are logged as `mel_l1`, `duration_mse`, `pitch_mse`, `energy_mse`.

Speakers (`acoustic.speakers`): each utterance's `speaker` value selects a speaker embedding; a fixed
tenth of the training utterances (by a hash of their index) are read as `<unknown>` instead, so that
id 0 learns an average voice, which evaluation uses for speakers absent from training.

Evaluation: the same loss and parts on the eval split with teacher-forced durations/pitch/energy and
dropout off, plus `length_error` (|predicted frames - true frames| / true frames, free-running).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from pipeline.audio import read_audio
from pipeline.config import Recipe
from pipeline.data.prepare import SkipReport, prepare_split
from pipeline.data.sources import describe_spec, load_spec
from pipeline.errors import DataError, ModelError, RecipeError
from pipeline.io import write_json, write_text
from pipeline.tasks.base import ModelHolder, metric_text, render_model_card
from pipeline.tts.acoustic import UNKNOWN_SPEAKER, AcousticModel, TargetStats, model_config, utterance_targets
from pipeline.tts.alignment import CTCAligner, cached_ctc_alignments
from pipeline.tts.mel import MelFrontEnd, get_mel_config, same_features
from pipeline.tts.phonemes import PhonemeVocab, frame_durations, synthetic_alignments

logger = logging.getLogger(__name__)

PARTS = ("mel_l1", "duration_mse", "pitch_mse", "energy_mse")


def _split_folder(spec: Any) -> Path:
    return Path(spec.path) / spec.split if spec.split else Path(spec.path)


@contextlib.contextmanager
def teacher_forced(model: torch.nn.Module) -> Iterator[None]:
    """Training-mode forward (ground-truth durations, a loss) with every dropout/batch norm in eval mode.

    FastSpeech2Conformer reads `self.training` of the top module (labels vs predictions) and of its
    duration predictor (log vs rounded linear durations); only those two flags are switched.
    """
    was = model.training
    model.eval()
    model.training = True
    model.duration_predictor.training = True
    try:
        yield
    finally:
        model.train(was)


class AcousticTask(ModelHolder):
    name = "acoustic"
    main_metric = "mel_l1"

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.a = recipe.acoustic
        self.report = SkipReport()
        self.mel_config = get_mel_config(self.a.mel)
        self._parts: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self._parts_n = 0

    # ---------------------------------------------------------------------------------------
    def setup(self, accelerator: Accelerator) -> None:
        r, d, m, a = self.recipe, self.recipe.data, self.recipe.model, self.a
        if a.durations == "ctc" and not a.aligner:
            raise RecipeError("acoustic.aligner: acoustic.durations=ctc needs a character CTC model to align the "
                              "recordings with (a model directory this toolkit trained, or a Hub id)")
        if d.train is None:
            raise RecipeError("data.train: the training corpus is missing")
        self.sample_rate = self.mel_config.sample_rate
        self.front_end = MelFrontEnd(self.mel_config)
        cache_dir = d.cache_dir or _cache_dir()
        common = dict(normalize=lambda t: t, min_duration=d.min_duration, max_duration=d.max_duration, need_text=True,
                      on_bad_rows=d.on_bad_rows, cache_dir=cache_dir, num_proc=d.num_proc)
        @functools.cache
        def make_aligner() -> CTCAligner:  # on this process's device (a GPU's for LJSpeech-sized data); once
            return CTCAligner(str(a.aligner), voice=a.voice, device=accelerator.device)

        def spans_of(table: Any, spec: Any) -> dict[Any, Any]:
            if a.durations != "ctc":
                return synthetic_alignments(_split_folder(spec), cache_dir)
            return cached_ctc_alignments(table, make_aligner, str(a.aligner), a.voice, self.sample_rate, describe_spec(spec),
                                         cache_dir, progress=accelerator.is_local_main_process)

        with accelerator.main_process_first():
            train = prepare_split(load_spec(d.train), "train", describe_spec(d.train), self.report, **common)
            self.train_rows = self._aligned(train, spans_of(train, d.train), "train", describe_spec(d.train))
            self.eval_rows: list[dict[str, Any]] = []
            if d.eval is not None:
                ev = prepare_split(load_spec(d.eval), "eval", describe_spec(d.eval), self.report, **common)
                self.eval_rows = self._aligned(ev, spans_of(ev, d.eval), "eval", describe_spec(d.eval))
        logger.info("data: %s", self.report.summary())
        self.out = Path(r.output_dir)
        if accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            self.report.write(self.out / "data_report.json")
        self._cache: dict[tuple[str, int], dict[str, Any]] = {}
        self._cache_bytes = 0
        self._cache_limit = int(r.train.feature_cache_gb * 2**30)
        if m.name_or_path:
            loaded = self._load_pretrained(Path(m.name_or_path))
            self.vocab, self.stats, self._model = loaded.vocab, loaded.stats, loaded.model.train()
            self.speakers, loaded_default = loaded.speakers, loaded.default_speaker
            if bool(self.speakers) != a.speakers:
                raise ModelError(f"{m.name_or_path}: acoustic.speakers={str(a.speakers).lower()} but the model was trained "
                                 f"{'with' if self.speakers else 'without'} speaker embeddings")
        else:
            self.vocab = PhonemeVocab.build([row["phonemes"] for row in self.train_rows], voice=a.voice)
            self.stats = self._fit_stats()
            self.speakers = self._build_speakers(describe_spec(d.train)) if a.speakers else None
            loaded_default = None
            from transformers import FastSpeech2ConformerModel

            self._model = FastSpeech2ConformerModel(model_config(m.config, len(self.vocab), self.mel_config.n_mels,
                                                                 len(self.speakers) if self.speakers else None))
        self.default_speaker = self._default_speaker(loaded_default) if self.speakers else None
        unknown = sorted({p for row in self.train_rows + self.eval_rows for p in self.vocab.unknown(row["phonemes"])})
        if unknown:
            logger.warning("phonemes missing from the vocabulary (read as <unk>): %s", " ".join(unknown))
        self._durations = [row["duration"] for row in self.train_rows]
        n = sum(p.numel() for p in self._model.parameters()) / 1e6
        logger.info("model: FastSpeech2Conformer %d+%d layers x %d, %.2f M parameters; %d phonemes; mel preset %s",
                    self._model.config.encoder_layers, self._model.config.decoder_layers, self._model.config.hidden_size,
                    n, len(self.vocab), self.mel_config.describe())

    def _aligned(self, ds: Any, spans: dict[Any, list[tuple[str, int, int]] | str | None], split: str, source: str,
                 ) -> list[dict[str, Any]]:
        """Rows that have phoneme spans (keyed by file name, or by row number for CTC alignments); the others
        are added to the skip report (a str value is why)."""
        by_row = self.a.durations == "ctc"
        rows, skipped = [], 0
        for row in ds:
            audio = row["audio"] if isinstance(row["audio"], str) else str((row["audio"] or {}).get("path"))
            found = spans.get(row["row"] if by_row else Path(audio).name)
            if not found or isinstance(found, str):
                why = found if isinstance(found, str) else "re-synthesis not sample-exact"
                self.report.skip(split, source, row["row"], audio, f"no phoneme durations ({why})")
                skipped += 1
                continue
            rows.append({"audio": row["audio"], "duration": float(row["duration"]), "text": row["text"],
                         "speaker": str(row.get("speaker") or ""),
                         "phonemes": [p for p, _, _ in found], "starts": [s for _, s, _ in found]})
        if skipped:
            entry = self.report.splits[split]
            entry["kept"] -= skipped
            entry["skipped"] += skipped
            reasons = entry["skipped_by_reason"]
            reasons["no phoneme durations"] = reasons.get("no phoneme durations", 0) + skipped
            logger.warning("%s: %d utterances without phoneme durations skipped", source, skipped)
        if not rows:
            raise DataError(f"{source}: no utterance with phoneme durations ({self.report.summary()})")
        return rows

    def _build_speakers(self, source: str) -> list[str]:
        names = sorted({row["speaker"] for row in self.train_rows if row["speaker"]})
        if not names:
            raise DataError(f"{source}: acoustic.speakers needs a speaker column (metadata `speaker`, or "
                            "data.train.speaker_column), and this split has no speaker names")
        logger.info("speakers: %d in the training split, plus %s (id 0)", len(names), UNKNOWN_SPEAKER)
        return [UNKNOWN_SPEAKER, *names]

    def _default_speaker(self, fallback: str | None) -> str:
        """acoustic.speaker, else the training speaker with the most utterances (the first by name on a tie),
        else (none of the training speakers is the model's) `fallback` or <unknown>."""
        assert self.speakers is not None
        if self.a.speaker is not None:
            if self.a.speaker not in self.speakers:
                raise RecipeError(f"acoustic.speaker: {self.a.speaker!r} is not a training speaker (there are "
                                  f"{len(self.speakers) - 1}, e.g. {', '.join(self.speakers[1:4])})")
            return self.a.speaker
        counts = Counter(row["speaker"] for row in self.train_rows if row["speaker"] in self.speakers[1:])
        if not counts:
            return fallback or UNKNOWN_SPEAKER
        return min(counts, key=lambda name: (-counts[name], name))

    def _speaker_id(self, split: str, index: int, name: str) -> int:
        """The row's speaker embedding id: 0 (<unknown>) for a fixed tenth of the training rows and for
        speakers not seen in training."""
        assert self.speakers is not None
        if split == "train" and zlib.crc32(f"{self.recipe.seed}:{index}".encode()) % 10 == 0:
            return 0
        try:
            return self.speakers.index(name)
        except ValueError:
            return 0

    def _load_pretrained(self, path: Path) -> AcousticModel:
        loaded = AcousticModel.from_pretrained(path)
        if not same_features(loaded.mel_config, self.mel_config):
            raise ModelError(f"mel mismatch: {path} was trained on preset {loaded.mel_config.describe()} but acoustic.mel "
                             f"is {self.mel_config.describe()}")
        return loaded

    def _fit_stats(self) -> TargetStats:
        n = min(self.a.stats_utterances, len(self.train_rows))
        idx = sorted(set(np.linspace(0, len(self.train_rows) - 1, n).round().astype(int).tolist()))
        mels, pitch, energy = [], [], []
        for i in idx:
            mel, p, e = self._raw_targets(self.train_rows[i])
            mels.append(mel)
            pitch.append(p)
            energy.append(e)
        return TargetStats.fit(mels, pitch, energy, self.a.f0_min, self.a.f0_max)

    # ---------------------------------------------------------------------------------------
    def _raw_targets(self, row: dict[str, Any]) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        audio = torch.from_numpy(read_audio(row["audio"], self.sample_rate)[0])
        durations = frame_durations(row["starts"], audio.numel(), self.mel_config)
        return utterance_targets(audio, durations, self.front_end, self.a.f0_min, self.a.f0_max)

    def _features(self, split: str, index: int) -> dict[str, Any]:
        """Model inputs and normalised targets of one utterance (cached in memory)."""
        hit = self._cache.get((split, index))
        if hit is not None:
            return hit
        row = (self.train_rows if split == "train" else self.eval_rows)[index]
        audio = torch.from_numpy(read_audio(row["audio"], self.sample_rate)[0])
        durations = frame_durations(row["starts"], audio.numel(), self.mel_config)
        mel, pitch, energy = utterance_targets(audio, durations, self.front_end, self.a.f0_min, self.a.f0_max)
        feat = {
            "ids": torch.tensor(self.vocab.encode(row["phonemes"]), dtype=torch.long),
            "durations": torch.tensor(durations, dtype=torch.long),
            "pitch": torch.from_numpy(self.stats.norm_pitch(pitch)).float(),
            "energy": torch.from_numpy(self.stats.norm_energy(energy)).float(),
            "mel": self.stats.norm_mel(mel),
            "seconds": audio.numel() / self.sample_rate,
        }
        if self.speakers:
            feat["speaker"] = self._speaker_id(split, index, row["speaker"])
        size = feat["mel"].numel() * 4
        if self._cache_bytes + size <= self._cache_limit:
            self._cache[(split, index)] = feat
            self._cache_bytes += size
        return feat

    def train_example(self, index: int) -> dict[str, Any]:
        return {"split": "train", "index": index}

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        feats = []
        for row in rows:
            try:
                feats.append(self._features(row["split"], row["index"]))
            except DataError as exc:  # changed on disk since it was measured: skip, never crash mid-run
                logger.warning("skipping an utterance: %s", exc)
        if not feats:
            return None
        b, n, f = len(feats), max(x["ids"].numel() for x in feats), max(x["mel"].shape[0] for x in feats)
        n_mels = feats[0]["mel"].shape[1]
        ids = torch.zeros(b, n, dtype=torch.long)
        mask = torch.zeros(b, n, dtype=torch.long)
        durations = torch.zeros(b, n, dtype=torch.long)
        pitch = torch.zeros(b, n, 1)
        energy = torch.zeros(b, n, 1)
        mel = torch.full((b, f, n_mels), -100.0)  # -100: padding for the model's spectrogram mask
        for i, x in enumerate(feats):
            k, t = x["ids"].numel(), x["mel"].shape[0]
            ids[i, :k], mask[i, :k], durations[i, :k] = x["ids"], 1, x["durations"]
            pitch[i, :k, 0], energy[i, :k, 0] = x["pitch"], x["energy"]
            mel[i, :t] = x["mel"]
        frames = sum(x["mel"].shape[0] for x in feats)
        batch = {"input_ids": ids, "attention_mask": mask, "duration_labels": durations, "pitch_labels": pitch,
                 "energy_labels": energy, "spectrogram_labels": mel, "units": frames,
                 "audio_seconds": sum(x["seconds"] for x in feats)}
        if self.speakers:
            batch["speaker_ids"] = torch.tensor([[x["speaker"]] for x in feats], dtype=torch.long)
        return batch

    # ---------------------------------------------------------------------------------------
    def _forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        keys = ("input_ids", "attention_mask", "duration_labels", "pitch_labels", "energy_labels", "spectrogram_labels",
                "speaker_ids")
        inputs = {k: batch[k].to(device) for k in keys if k in batch}
        out = model(**inputs, return_dict=True)
        with torch.no_grad():
            real = inputs["attention_mask"].bool()
            frames = (inputs["spectrogram_labels"] != -100).any(dim=-1)
            parts = {
                "mel_l1": float((out.spectrogram.float() - inputs["spectrogram_labels"]).abs()[frames].mean()),
                "duration_mse": float((out.duration_outputs.float()
                                       - torch.log(inputs["duration_labels"].float() + 1.0))[real].pow(2).mean()),
                "pitch_mse": float((out.pitch_outputs.float() - inputs["pitch_labels"])[real].pow(2).mean()),
                "energy_mse": float((out.energy_outputs.float() - inputs["energy_labels"])[real].pow(2).mean()),
            }
        return out.loss, parts

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        mean_loss, parts = self._forward(model, batch)
        for k, v in parts.items():
            self._parts[k] += v
        self._parts_n += 1
        frames = float(batch["units"])
        return mean_loss * frames, torch.tensor(frames)

    def step_metrics(self) -> dict[str, float]:
        """Loss parts (mel L1 after the post-net on normalised mels, MSEs) averaged since the last call."""
        n = max(self._parts_n, 1)
        out = {k: v / n for k, v in self._parts.items()}
        self._parts, self._parts_n = dict.fromkeys(PARTS, 0.0), 0
        return out

    # ---------------------------------------------------------------------------------------
    def evaluate(self, accelerator: Accelerator, model: torch.nn.Module, limit: int | None = None) -> dict[str, Any]:
        if not self.eval_rows:
            return {}
        n = len(self.eval_rows) if limit is None else min(limit, len(self.eval_rows))
        chosen = np.linspace(0, len(self.eval_rows) - 1, n).round().astype(int).tolist() if n else []
        world, rank = accelerator.num_processes, accelerator.process_index
        records = []
        device = next(model.parameters()).device
        for i in chosen[rank::world]:
            batch = self.collate([{"split": "eval", "index": i}])
            if batch is None:
                continue
            with torch.no_grad():
                with teacher_forced(model):
                    loss, parts = self._forward(model, batch)
                was = model.training
                model.eval()
                speaker = {"speaker_ids": batch["speaker_ids"].to(device)} if "speaker_ids" in batch else {}
                free = model(input_ids=batch["input_ids"].to(device), return_dict=True, **speaker)
                model.train(was)
            true = int(batch["units"])
            predicted = int(free.duration_outputs.sum().clamp(min=1))
            records.append({"loss": float(loss), **parts, "length_error": abs(predicted - true) / max(true, 1), "w": true})
        if world > 1:
            records = accelerator.gather_for_metrics(records, use_gather_object=True)
        if not accelerator.is_main_process or not records:
            return {}
        total = sum(r["w"] for r in records)
        return {k: sum(r[k] * r["w"] for r in records) / total for k in ("loss", *PARTS, "length_error")}

    # ---------------------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, output_dir: Path, metrics: dict[str, Any]) -> None:
        model.eval()
        AcousticModel(model, self.vocab, self.mel_config, self.stats, self.speakers,
                      self.default_speaker).save_pretrained(output_dir)
        meta = {"task": "acoustic", "mel_preset": self.mel_config.name, "sample_rate": self.sample_rate,
                "train_data": describe_spec(self.recipe.data.train), "phonemes": len(self.vocab),
                "speakers": len(self.speakers) - 1 if self.speakers else 0}
        write_json(Path(output_dir) / "speech_pipeline.json", meta)
        write_text(Path(output_dir) / "README.md", model_card(self.recipe, model, self, metrics))
        if self.recipe.train.push_to_hub:
            model.push_to_hub(self.recipe.train.hub_model_id or Path(output_dir).name)


def _cache_dir() -> str:
    from pipeline.evaluation.evaluate import default_cache_dir

    return default_cache_dir()


def model_card(recipe: Recipe, model: torch.nn.Module, task: AcousticTask, metrics: dict[str, Any]) -> str:
    def fmt(key: str) -> str:
        return metric_text(metrics, key)

    c = model.config
    n = sum(p.numel() for p in model.parameters()) / 1e6
    body = [
        f"A FastSpeech2Conformer acoustic model (text -> mel; {c.encoder_layers}+{c.decoder_layers} layers x {c.hidden_size}, "
        f"{n:.2f} M parameters) trained with speech-pipeline. {recipe.description}".strip(), "",
        f"- mel preset: {task.mel_config.describe()} (`mel_config.json`): pair it with a vocoder of the same preset",
        f"- phonemes: {len(task.vocab)} espeak-ng phoneme tokens (`phonemes.json`), text phonemised with voice "
        f"`{task.vocab.voice}`; durations "
        + (f"by CTC forced alignment with `{recipe.acoustic.aligner}`" if recipe.acoustic.durations == "ctc"
           else "from espeak-ng phoneme events of the synthetic corpus"),
        f"- data: `{describe_spec(recipe.data.train) if recipe.data.train else '-'}`; {task.report.summary()}",
        (f"- speakers: {len(task.speakers) - 1} training speakers and `<unknown>` (`speakers.json`); default voice "
         f"`{task.default_speaker}` (`--speaker NAME` picks another)" if task.speakers else "- speakers: one voice"), "",
        "## Results (held-out, teacher-forced; mels normalised per bin)", "",
        "| loss | mel L1 | duration MSE (log) | pitch MSE | energy MSE | length error |", "|---|---|---|---|---|---|",
        f"| {fmt('eval_loss')} | {fmt('eval_mel_l1')} | {fmt('eval_duration_mse')} | {fmt('eval_pitch_mse')} | "
        f"{fmt('eval_energy_mse')} | {fmt('eval_length_error')} |", "",
    ]
    usage = ["```bash", f'python scripts/synthesize.py --acoustic {recipe.output_dir} --vocoder VOCODER_DIR '
             '--text "Hello there." --output hello.wav', "```", ""]
    return render_model_card(recipe, ["tags: [text-to-speech, fastspeech2-conformer, speech-pipeline]"], body, metrics, usage)
