#!/usr/bin/env python
"""Evaluate a model on a data spec: writes OUT/metrics.json and OUT/predictions.jsonl.

Example: python scripts/evaluate.py --model runs/quickstart --data data/synth/test --output runs/quickstart/eval
"""

from __future__ import annotations

import argparse
import json

from pipeline.cli import entry_point, setup_logging
from pipeline.config import DataSpec
from pipeline.evaluation.evaluate import evaluate_model


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory (or Hub id)")
    p.add_argument("--data", required=True, help="folder, .csv/.jsonl manifest, or Hub dataset name")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--split", help="Hub split, or sub-folder of --data")
    p.add_argument("--config", help="Hub dataset configuration")
    p.add_argument("--text-column", default="text")
    p.add_argument("--audio-column")
    p.add_argument("--normalizer", help="default | english | none (default: the one the model was trained with)")
    p.add_argument("--batch-seconds", type=float, default=240.0)
    p.add_argument("--max-duration", type=float, default=3600.0, help="skip longer files (seconds)")
    p.add_argument("--strict", action="store_true", help="fail on the first unusable row instead of skipping it")
    a = p.parse_args()
    setup_logging()
    spec = DataSpec(path=a.data, config=a.config, split=a.split, text_column=a.text_column, audio_column=a.audio_column)
    m = evaluate_model(a.model, spec, a.output, normalizer=a.normalizer, batch_seconds=a.batch_seconds,
                       max_duration=a.max_duration, on_bad_rows="error" if a.strict else "skip")
    keys = ("wer", "cer", "substitutions", "deletions", "insertions", "num_utterances", "normalizer")
    print(json.dumps({k: m[k] for k in keys}))


if __name__ == "__main__":
    main()
