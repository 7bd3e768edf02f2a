"""Evaluate a CTC model on a data spec: `metrics.json` and `predictions.jsonl`.

Transcription is sharded over processes (each takes every N-th utterance in length order) and the
per-utterance results are gathered with `gather_for_metrics`, then put back in table order, so a
distributed evaluation scores exactly the utterances, and gets exactly the WER, of a single one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import datasets
import torch

from pipeline.audio import read_audio
from pipeline.config import DataSpec
from pipeline.data.batching import sorted_shards
from pipeline.data.prepare import SkipReport, prepare_split
from pipeline.data.sources import describe_spec, load_spec
from pipeline.data.text import get_normalizer
from pipeline.evaluation.inference import Transcriber
from pipeline.evaluation.metrics import error_rates
from pipeline.io import write_json, write_jsonl

logger = logging.getLogger(__name__)

PIPELINE_META = "speech_pipeline.json"


def transcribe_table(accelerator: Any, transcriber: Transcriber, table: datasets.Dataset, progress: bool = False) -> list[str]:
    """Hypotheses for every row of `table`, in table order, computed on all processes together."""
    sr = transcriber.feature_extractor.sampling_rate
    durations = table["duration"]
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    mine = sorted_shards(durations, world, rank)
    audios = [read_audio(table[i]["audio"], sr)[0] for i in mine]
    texts = transcriber.transcribe(audios, progress=progress and rank == 0)
    records = [{"index": i, "hypothesis": h} for i, h in zip(mine, texts, strict=True)]
    if world > 1:
        records = accelerator.gather_for_metrics(records, use_gather_object=True)
    out: list[str | None] = [None] * len(table)
    for r in records:
        out[r["index"]] = r["hypothesis"]
    missing = [i for i, h in enumerate(out) if h is None]
    if missing:
        raise RuntimeError(f"distributed evaluation lost {len(missing)} utterances (first: {missing[:5]})")
    return out  # type: ignore[return-value]


def score(table: datasets.Dataset, hypotheses: list[str], normalizer: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and per-utterance predictions; references in `table['text']` are already normalised."""
    normalize = get_normalizer(normalizer)
    refs = list(table["text"])
    hyps = [normalize(h) for h in hypotheses]
    rates = error_rates(refs, hyps)
    per_utt = rates.pop("per_utterance")
    speakers = table["speaker"] if "speaker" in table.column_names else [""] * len(table)
    rows = []
    for i, (ref, hyp, raw, u) in enumerate(zip(refs, hyps, hypotheses, per_utt, strict=True)):
        audio = table[i]["audio"]
        rows.append({
            "audio": audio if isinstance(audio, str) else str((audio or {}).get("path")),
            "reference": ref, "hypothesis": hyp, "hypothesis_raw": raw,
            "speaker": speakers[i], "duration": round(float(table[i]["duration"]), 3),
            "wer": (u["word_errors"] / u["words"]) if u["words"] else float(u["word_errors"] > 0),
            **u,
        })
    metrics = {**rates, "normalizer": normalizer, "audio_hours": round(sum(table["duration"]) / 3600, 4)}
    return metrics, rows


def load_model_dir(model_dir: str, device: str | torch.device | None = None) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(model, feature_extractor, tokenizer, pipeline metadata) from a saved model directory or Hub id."""
    from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

    from pipeline.errors import ModelError
    from pipeline.models.asr import preflight

    try:
        model = AutoModelForCTC.from_pretrained(model_dir, trust_remote_code=False, dtype="float32")
        fe = AutoFeatureExtractor.from_pretrained(model_dir)
        tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{model_dir}: cannot load the model directory ({str(exc).splitlines()[0]})") from None
    preflight(model, tok, where=str(model_dir))
    meta_path = Path(model_dir) / PIPELINE_META
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    return model, fe, tok, meta


def evaluate_model(
    model_dir: str,
    data: DataSpec,
    output: str | Path,
    normalizer: str | None = None,
    batch_seconds: float = 240.0,
    max_duration: float = 3600.0,
    on_bad_rows: str = "skip",
    accelerator: Any = None,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    model, fe, tok, meta = load_model_dir(model_dir, device=accelerator.device if accelerator is not None else None)
    normalizer = normalizer or meta.get("normalizer", "default")
    report = SkipReport()
    table = prepare_split(
        load_spec(data), "eval", describe_spec(data), report, normalize=get_normalizer(normalizer),
        min_duration=0.0, max_duration=max_duration, need_text=True, on_bad_rows=on_bad_rows,
        cache_dir=cache_dir or default_cache_dir(),
    )
    transcriber = Transcriber(model, fe, tok, batch_seconds=batch_seconds)
    hyps = transcribe_table(accelerator, transcriber, table, progress=True)
    metrics, rows = score(table, hyps, normalizer)
    metrics.update(model=str(model_dir), data=describe_spec(data), skipped_rows=report.count())
    is_main = accelerator is None or accelerator.is_main_process
    if is_main:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "predictions.jsonl", rows)
        write_json(out / "metrics.json", metrics)
        report.write(out / "data_report.json")
    return metrics


def default_cache_dir() -> str:
    import os

    return os.environ.get("SPEECH_PIPELINE_CACHE", str(Path.home() / ".cache" / "speech-pipeline"))
