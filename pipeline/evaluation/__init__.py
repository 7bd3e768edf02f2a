"""Evaluation: transcription, WER/CER, alignments, confidence intervals, reports, LM decoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WER_METRIC_DIR = Path(__file__).resolve().parent / "wer_metric"


def load_wer_metric(**kwargs: Any) -> Any:
    """Our WER/CER as an `evaluate` metric, loaded offline from the package (no Hub access).

    ``load_wer_metric().compute(predictions=[...], references=[...], normalizer="default")``
    returns ``{"wer": ..., "cer": ...}`` computed exactly as `scripts/evaluate.py` does.
    """
    import evaluate

    return evaluate.load(str(WER_METRIC_DIR), **kwargs)
