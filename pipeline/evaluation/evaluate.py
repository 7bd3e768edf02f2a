"""Evaluate a CTC model on a data spec: `metrics.json` and `predictions.jsonl`.

Transcription is sharded over processes (each takes every N-th utterance in length order) and the
per-utterance results are gathered with `gather_for_metrics`, then put back in table order, so a
distributed evaluation scores exactly the utterances, and gets exactly the WER, of a single one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch

from pipeline.audio import read_audio
from pipeline.config import DataSpec
from pipeline.data.batching import sorted_shards
from pipeline.data.noise import load_recordings
from pipeline.data.prepare import SkipReport, prepare_split
from pipeline.data.sources import describe_spec, load_spec
from pipeline.data.text import get_normalizer
from pipeline.evaluation.inference import Transcriber
from pipeline.evaluation.metrics import error_rates
from pipeline.io import write_json, write_jsonl

if TYPE_CHECKING:
    from pipeline.evaluation.robustness import Corruption

logger = logging.getLogger(__name__)

PIPELINE_META = "speech_pipeline.json"


def transcribe_table(accelerator: Any, transcriber: Transcriber, table: datasets.Dataset, progress: bool = False,
                     corrupt: Callable[[int, np.ndarray], np.ndarray] | None = None) -> list[str]:
    """Hypotheses for every row of `table`, in table order, computed on all processes together.

    `corrupt(row, audio)`: what the model hears instead of each row's audio (`robustness.FixedCorruptor`).
    """
    sr = transcriber.feature_extractor.sampling_rate
    durations = table["duration"]
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    mine = sorted_shards(durations, world, rank)
    audios = [read_audio(table[i]["audio"], sr)[0] for i in mine]
    if corrupt is not None:
        audios = [corrupt(i, a) for i, a in zip(mine, audios, strict=True)]
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


def score(table: datasets.Dataset, hypotheses: list[str], normalizer: str, group_by: str = "speaker",
          details: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and per-utterance predictions; references in `table['text']` are already normalised.

    With `details`, each row also gets its word `alignment` and the metrics get `top_errors`,
    `by_<group_by>` (default `by_speaker`), `by_duration` and bootstrap intervals (`wer_ci95`,
    `cer_ci95`, `ci_method`): see `add_analysis`.
    """
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
    if details:
        if group_by not in ("speaker", "") and group_by in table.column_names:
            for row, value in zip(rows, table[group_by], strict=True):
                row[group_by] = value
        add_analysis(metrics, rows, group_by)
    return metrics, rows


def add_analysis(metrics: dict[str, Any], rows: list[dict[str, Any]], group_by: str = "speaker") -> None:
    """Alignments per row; error pairs, breakdowns and 95% bootstrap intervals into `metrics`.

    The intervals resample speakers (cluster bootstrap) when the `speaker` column names at least
    two speakers, otherwise utterances; see `pipeline.evaluation.stats`.
    """
    from pipeline.evaluation.alignment import align_words, breakdown, duration_bins, top_errors
    from pipeline.evaluation.stats import confidence_intervals

    for row in rows:
        row["alignment"] = align_words(row["reference"], row["hypothesis"])
    metrics.update(confidence_intervals(rows, cluster_column="speaker"))
    metrics["top_errors"] = top_errors(r["alignment"] for r in rows)
    if group_by:
        metrics[f"by_{group_by}"] = breakdown(rows, group_by)
    metrics["by_duration"] = duration_bins(rows)


RUNTIMES = ("torch", "onnx")


def add_runtime_argument(parser: Any) -> None:
    parser.add_argument("--runtime", choices=RUNTIMES, default="torch",
                        help="run the model on PyTorch, or its ONNX export (scripts/export_onnx.py) on ONNX Runtime "
                             "(CPU; faster one file at a time, the same in batches)")


def load_model_dir(model_dir: str, device: str | torch.device | None = None, runtime: str = "torch"
                   ) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(model, feature_extractor, tokenizer, pipeline metadata) from a saved model directory or Hub id.

    `runtime="onnx"`: the model runs the directory's `model.onnx` on ONNX Runtime (`pipeline.models.onnx`).
    """
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
    if runtime == "onnx":
        from pipeline.models.onnx import OnnxCTC

        if device is not None and torch.device(device).type != "cpu":
            raise ModelError(f"--runtime onnx runs on the CPU, not {device}")
        if not Path(model_dir).is_dir():
            raise ModelError(f"{model_dir}: --runtime onnx needs a local model directory with an ONNX export")
        return OnnxCTC(model_dir, model.eval()).eval(), fe, tok, meta
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    return model, fe, tok, meta


def evaluate_model(
    model_dir: str,
    data: DataSpec,
    output: str | Path,
    normalizer: str | None = None,
    batch_seconds: float | None = None,
    max_duration: float = 3600.0,
    on_bad_rows: str = "skip",
    accelerator: Any = None,
    cache_dir: str | None = None,
    decoder: str = "greedy",
    lm: str | None = None,
    beam_width: int | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    chunk_seconds: float | None = None,
    stride_seconds: float | None = None,
    group_by: str = "speaker",
    write_html: bool = True,
    workers: int | None = None,
    tempos: Sequence[float] | None = None,
    choices: str | None = None,
    runtime: str = "torch",
    corruption: Corruption | None = None,
) -> dict[str, Any]:
    """Transcribe `data` with the model and write metrics.json, predictions.jsonl, report.html.

    `decoder`: "greedy" or "beam" (pyctcdecode; with the n-gram LM at `lm`, or the model
    directory's own `language_model/` when `lm` is None). Audio longer than `chunk_seconds`
    (default 20; 0 turns chunking off) is transcribed in overlapping windows (`long_audio`).
    `workers`: batches transcribed at once on a CPU (default: one per torch thread; see `Transcriber`).
    `tempos`: greedy decoding at these speaking rates, the transcript they agree on most (`tempo.py`).
    `choices` (with `decoder="choices"`): a text file (a phrase a line) or data spec (its transcripts) whose
    phrases are the only possible transcripts (`choices.py`).
    `runtime`: "torch", or "onnx" for the model directory's ONNX export on ONNX Runtime (`load_model_dir`).
    `corruption`: also score the set under noise / reverberation, one sub-folder per condition, with a summary
    in `robustness.json` and `robustness.png` (`robustness.py`).
    """
    from pipeline.evaluation.long_audio import DEFAULT_CHUNK_SECONDS

    if chunk_seconds is None:
        chunk_seconds = DEFAULT_CHUNK_SECONDS
    model, fe, tok, meta = load_model_dir(model_dir, device=accelerator.device if accelerator is not None else None,
                                          runtime=runtime)
    normalizer = normalizer or meta.get("normalizer", "default")
    report = SkipReport()
    table = prepare_split(
        load_spec(data), "eval", describe_spec(data), report, normalize=get_normalizer(normalizer),
        min_duration=0.0, max_duration=max_duration, need_text=True, on_bad_rows=on_bad_rows,
        cache_dir=cache_dir or default_cache_dir(),
    )
    sample_rate, noise, rirs = int(fe.sampling_rate), None, None
    if corruption is not None:  # the noise files are measured before the long clean pass, so bad specs fail first
        settings = dict(normalize=get_normalizer(normalizer), on_bad_rows=on_bad_rows, cache_dir=cache_dir or default_cache_dir())
        noise = load_recordings(corruption.noise, "noise", report, sample_rate, settings, where="--noise")
        rirs = load_recordings(corruption.reverb, "reverb", report, sample_rate, settings, where="--reverb")
    phrases = read_choices(choices, normalizer, decoder)
    transcriber, decoding = build_transcriber(model, fe, tok, model_dir, decoder=decoder, lm=lm, beam_width=beam_width,
                                              alpha=alpha, beta=beta, batch_seconds=batch_seconds,
                                              chunk_seconds=chunk_seconds, stride_seconds=stride_seconds,
                                              workers=workers, tempos=tempos, choices=phrases)
    if choices:
        decoding["choices_from"] = str(choices)
    if runtime != "torch":
        decoding["runtime"] = runtime
    hyps = transcribe_table(accelerator, transcriber, table, progress=True)
    metrics, rows = score(table, hyps, normalizer, group_by=group_by)
    metrics.update(model=str(model_dir), data=describe_spec(data), skipped_rows=report.count(), decoding=decoding)
    is_main = accelerator is None or accelerator.is_main_process
    if is_main:
        _write_scores(Path(output), metrics, rows, group_by, write_html)
        report.write(Path(output) / "data_report.json")
    if corruption is not None:
        metrics["robustness"] = _score_conditions(accelerator, transcriber, table, corruption, sample_rate, noise, rirs,
                                                  metrics, Path(output), normalizer, group_by, write_html)
    return metrics


def _write_scores(out: Path, metrics: dict[str, Any], rows: list[dict[str, Any]], group_by: str | None,
                  write_html: bool) -> None:
    """`out/predictions.jsonl`, `out/metrics.json` and (`write_html`) `out/report.html`."""
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "predictions.jsonl", rows)
    write_json(out / "metrics.json", metrics)
    if write_html:
        from pipeline.evaluation.report import write_report

        write_report(out, metrics, rows, group_column=group_by or "speaker")


def _score_conditions(accelerator: Any, transcriber: Any, table: datasets.Dataset, corruption: Corruption,
                      sample_rate: int, noise: Any, rirs: Any, clean: dict[str, Any], out: Path, normalizer: str,
                      group_by: str, write_html: bool) -> list[dict[str, Any]]:
    """Each condition of `corruption` scored like the clean set, in `out/<condition>/`; the summary in
    `out/robustness.json` (and a plot of WER against SNR)."""
    from pipeline.evaluation.robustness import FixedCorruptor, plot_robustness

    is_main = accelerator is None or accelerator.is_main_process
    summary = []
    for name, snr in corruption.conditions():
        logger.info("scoring under %s", corruption.describe(snr))
        corrupt = FixedCorruptor(corruption, snr, sample_rate, noise, rirs)
        hyps = transcribe_table(accelerator, transcriber, table, progress=True, corrupt=corrupt)
        metrics, rows = score(table, hyps, normalizer, group_by=group_by)
        metrics.update(condition=corruption.describe(snr), seed=corruption.seed, model=clean.get("model"),
                       data=clean.get("data"), decoding=clean.get("decoding"))
        summary.append({"condition": name, "snr": snr, "reverb": corruption.reverb is not None, "wer": metrics["wer"],
                        "cer": metrics["cer"], "wer_ci95": metrics.get("wer_ci95")})
        if is_main:
            _write_scores(out / name, metrics, rows, group_by, write_html)
    if is_main:
        write_json(out / "robustness.json", {
            "clean": {"wer": clean["wer"], "cer": clean["cer"], "wer_ci95": clean.get("wer_ci95")},
            "noise": corruption.noise.path if corruption.noise else None,
            "reverb": corruption.reverb.path if corruption.reverb else None,
            "rt60": corruption.rt60 if corruption.synthetic_rooms else None,
            "seed": corruption.seed, "conditions": summary})
        if write_html and len(summary) > 1:
            title = f"{Path(str(clean.get('model'))).name} on {clean.get('data')}\n{corruption.describe(None)}"
            plot_robustness(out / "robustness.png", clean["wer"], summary, title)
    return summary


def check_choices(decoder: str, choices: str | None) -> None:
    """`--decoder choices` needs `--choices`, and `--choices` means nothing to the other decoders."""
    from pipeline.errors import ModelError

    if (decoder == "choices") != bool(choices):
        raise ModelError("--decoder choices and --choices FILE go together")


def read_choices(choices: str | None, normalizer: str, decoder: str) -> list[str] | None:
    """The phrases of `--choices` (normalised as the references are), checked against `--decoder`."""
    from pipeline.data.sources import read_sentences

    check_choices(decoder, choices)
    return read_sentences(choices, get_normalizer(normalizer)) if choices else None


def build_transcriber(model: Any, fe: Any, tok: Any, model_dir: str | Path, decoder: str = "greedy",
                      lm: str | None = None, beam_width: int | None = None, alpha: float | None = None,
                      beta: float | None = None, batch_seconds: float | None = None, chunk_seconds: float | None = None,
                      stride_seconds: float | None = None, tempos: Sequence[float] | None = None,
                      choices: Sequence[str] | None = None, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """(transcriber, description for metrics.json): greedy (at one tempo or several), beam search, or one of
    the phrases `choices`; chunking long audio (chunked files are decoded at tempo 1 only; with `choices`
    every file is one utterance, whatever its length)."""
    from pipeline.errors import ModelError
    from pipeline.evaluation.long_audio import make_transcriber

    if decoder == "choices":
        from pipeline.evaluation.choices import ChoicesTranscriber

        if lm is not None or tempos:
            raise ModelError("--decoder choices takes neither --lm nor --tempos")
        chooser = ChoicesTranscriber(model, fe, tok, choices or [], batch_seconds=batch_seconds, **kwargs)
        return chooser, {"decoder": "choices", "choices": len(chooser.phrases)}
    if decoder == "greedy":
        if lm is not None:
            raise ModelError("--lm needs --decoder beam")
        if tempos:
            from pipeline.evaluation.tempo import TempoEnsembleTranscriber

            base: Transcriber = TempoEnsembleTranscriber(model, fe, tok, tempos, batch_seconds=batch_seconds, **kwargs)
            decoding: dict[str, Any] = {"decoder": "greedy", "tempos": base.tempos}
        else:
            base = Transcriber(model, fe, tok, batch_seconds=batch_seconds, **kwargs)
            decoding = {"decoder": "greedy"}
    elif tempos:
        raise ModelError("--tempos works with --decoder greedy only")
    elif decoder == "beam":
        from pipeline.evaluation.lm import (
            DEFAULT_BEAM_WIDTH,
            BeamSearchTranscriber,
            describe_decoder,
            find_lm_dir,
        )
        from pipeline.evaluation.lm import load_decoder as load_ctc_decoder

        if lm is None and find_lm_dir(model_dir) is not None and Path(model_dir, "language_model").is_dir():
            lm = str(model_dir)
            logger.info("beam search with the model directory's language model (%s/language_model)", model_dir)
        width = beam_width or DEFAULT_BEAM_WIDTH
        ctc_decoder = load_ctc_decoder(tok, lm, alpha=alpha, beta=beta)
        base = BeamSearchTranscriber(model, fe, tok, ctc_decoder, beam_width=width, batch_seconds=batch_seconds, **kwargs)
        decoding = describe_decoder("beam", lm, width, alpha, beta)
    else:
        raise ModelError(f"--decoder: unknown decoder {decoder!r} (choose greedy, beam or choices)")
    if chunk_seconds:
        decoding["chunk_seconds"] = float(chunk_seconds)
        decoding["stride_seconds"] = round(float(stride_seconds if stride_seconds is not None else chunk_seconds / 6), 3)
    return make_transcriber(base, chunk_seconds, stride_seconds), decoding


def default_cache_dir() -> str:
    import os

    return os.environ.get("SPEECH_PIPELINE_CACHE", str(Path.home() / ".cache" / "speech-pipeline"))
