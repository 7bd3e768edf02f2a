"""Transcribe a whole data spec (a folder, a manifest, a Hub dataset) into a training manifest: pseudo-labels.

Untranscribed audio is the common case: a model of this toolkit labels it, each utterance with a confidence,
and the utterances it is sure of become training data (self-training / "pseudo-labelling", as in NeMo's and
ESPnet's semi-supervised recipes). An utterance's confidence is the mean of its words' confidences
(`timestamps`: calibrated on held-out voices, so the mean is the expected share of its words that are right);
`min_confidence` keeps those at or above it. Audio is read and transcribed in blocks, so a folder of any size
fits in memory; the manifest (`audio` path, `text`, `speaker` when the spec has one, `confidence`) is a `.csv`
that `data.train` reads as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.config import DataSpec
from pipeline.errors import DataError
from pipeline.evaluation.timestamps import Timed

BLOCK = 256  # utterances read and transcribed at a time


def utterance_confidence(result: Timed) -> float | None:
    """Mean word confidence of one transcript; None for an empty one."""
    values = [w["confidence"] for w in result["words"] if "confidence" in w]
    return round(sum(values) / len(values), 4) if values else None


def transcribe_spec(transcriber: Any, spec: DataSpec, report: Any, max_duration: float = 3600.0,
                    cache_dir: str | None = None, progress: bool = True) -> Iterator[dict[str, Any]]:
    """{"audio", "speaker", "text", "words", "confidence"} for every usable row of `spec`, in its order; rows
    that cannot be used are skipped into `report` (a `SkipReport`)."""
    from pipeline.audio import read_audio
    from pipeline.data.prepare import prepare_split
    from pipeline.data.sources import describe_spec, load_spec
    from pipeline.evaluation.evaluate import default_cache_dir

    table = prepare_split(load_spec(spec, need_text=False), "transcribe", describe_spec(spec), report,
                          normalize=lambda s: s, min_duration=0.0, max_duration=max_duration, need_text=False,
                          on_bad_rows="skip", cache_dir=cache_dir or default_cache_dir())
    sr = int(transcriber.feature_extractor.sampling_rate)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(table), desc="transcribing", unit="file")
    for first in range(0, len(table), BLOCK):
        rows = table.select(range(first, min(first + BLOCK, len(table))))
        audios, paths, speakers = [], [], []
        for path, speaker, row in zip(rows["audio"], rows["speaker"], rows["row"], strict=True):
            try:
                audios.append(read_audio(path, sr)[0])
            except DataError as exc:  # changed since it was measured
                report.skip("transcribe", describe_spec(spec), row, path, str(exc))
                continue
            paths.append(path)
            speakers.append(speaker)
        for path, speaker, result in zip(paths, speakers, transcriber.transcribe_words(audios), strict=True):
            yield {"audio": path, "speaker": speaker, **result, "confidence": utterance_confidence(result)}
        if bar is not None:
            bar.update(len(audios))
    if bar is not None:
        bar.close()


MANIFEST_FIELDS = ["audio", "text", "speaker", "confidence"]


def label_spec(transcriber: Any, spec: DataSpec, on_row: Callable[[dict[str, Any]], None], manifest: str | None = None,
               min_confidence: float = 0.0, progress: bool = True) -> dict[str, Any]:
    """Transcribe `spec` (`transcribe_spec`), hand each result to `on_row`, and write the `manifest` of those with
    a confidence of at least `min_confidence`. Returns counts and the skipped rows."""
    from pipeline.data.prepare import SkipReport
    from pipeline.io import write_csv

    report = SkipReport()
    kept: list[dict[str, Any]] = []
    total = 0
    for row in transcribe_spec(transcriber, spec, report, progress=progress):
        total += 1
        on_row(row)
        if row["confidence"] is not None and row["confidence"] >= min_confidence:
            kept.append(row)
    if manifest:  # absolute audio paths: the manifest may live anywhere
        write_csv(manifest, ({**r, "audio": str(Path(r["audio"]).resolve())} for r in kept), MANIFEST_FIELDS)
    return {"transcribed": total, "kept": len(kept), "skipped": report.skipped}
