#!/usr/bin/env python
"""Evaluate a model on a data spec: writes OUT/metrics.json, OUT/predictions.jsonl, OUT/report.html.

Examples:
  python scripts/evaluate.py --model runs/quickstart --data data/synth/test --output runs/quickstart/eval
  python scripts/evaluate.py --model runs/quickstart --data data/synth/test --output runs/quickstart/eval_lm \\
      --decoder beam --lm runs/quickstart/lm --beam-width 64 --alpha 0.5 --beta 1.5
  python scripts/evaluate.py --model runs/quickstart --data data/synth/test --output runs/quickstart/eval_tempo \\
      --tempos 0.875,0.9375,1,1.0625,1.125          # tempo ensemble (log-mel models)
  python scripts/evaluate.py --model runs/fsdd --data ../shared/data/fsdd/dev --output runs/fsdd/eval_choices \\
      --decoder choices --choices ../shared/data/fsdd/train  # each utterance is one of the training transcripts
  python scripts/evaluate.py --model runs/quickstart --data data/synth/test --output runs/quickstart/eval_noise \\
      --noise synthetic --snr 20,10,5,0 --reverb synthetic   # also under noise and reverberation: robustness.json
See docs/evaluation.md for how to read the outputs.
"""

from __future__ import annotations

import argparse
import json

from pipeline.cli import entry_point, setup_logging
from pipeline.config import DataSpec
from pipeline.evaluation.evaluate import add_runtime_argument, check_choices, evaluate_model
from pipeline.evaluation.robustness import add_corruption_arguments, parse_corruption
from pipeline.evaluation.tempo import add_tempos_argument, parse_tempos


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
    p.add_argument("--batch-seconds", type=float, default=None,
                   help="padded audio seconds per batch (default: 30 on CPU, where cache-sized batches are fastest; 240 on GPU)")
    p.add_argument("--max-duration", type=float, default=3600.0, help="skip longer files (seconds)")
    p.add_argument("--strict", action="store_true", help="fail on the first unusable row instead of skipping it")
    p.add_argument("--decoder", choices=("greedy", "beam", "choices"), default="greedy",
                   help="greedy CTC, beam search (pyctcdecode) with an optional n-gram LM, or the most probable of "
                        "the --choices phrases")
    p.add_argument("--choices", help="with --decoder choices: a text file (one phrase a line) or data spec (its "
                                     "transcripts): each utterance is one of these phrases (digits, commands)")
    p.add_argument("--lm", help="LM directory from scripts/build_lm.py (default with --decoder beam: the model "
                                "directory's language_model/, if any)")
    p.add_argument("--beam-width", type=int, default=None, help="beams kept (default 64)")
    p.add_argument("--alpha", type=float, default=None, help="LM weight (default: the LM's attrs.json, 0.5)")
    p.add_argument("--beta", type=float, default=None, help="word insertion bonus (default: attrs.json, 1.5)")
    p.add_argument("--workers", type=int, default=None,
                   help="batches transcribed at once on a CPU, each on its share of the threads (default: one per "
                        "torch thread for the models that allow it; 1: one batch at a time)")
    p.add_argument("--chunk-seconds", type=float, default=20.0,
                   help="transcribe audio longer than this in overlapping windows of this length (0: never)")
    p.add_argument("--stride-seconds", type=float, default=None,
                   help="overlap kept as context on each side of a window (default: chunk/6)")
    add_tempos_argument(p)
    add_runtime_argument(p)
    add_corruption_arguments(p)
    p.add_argument("--group-by", default="speaker", help="column for the per-group breakdown (default: speaker)")
    p.add_argument("--no-report", action="store_true", help="skip report.html and the plots")
    a = p.parse_args()
    check_choices(a.decoder, a.choices)
    corruption = parse_corruption(a)
    setup_logging()
    spec = DataSpec(path=a.data, config=a.config, split=a.split, text_column=a.text_column, audio_column=a.audio_column)
    m = evaluate_model(a.model, spec, a.output, normalizer=a.normalizer, batch_seconds=a.batch_seconds,
                       max_duration=a.max_duration, on_bad_rows="error" if a.strict else "skip",
                       decoder=a.decoder, lm=a.lm, beam_width=a.beam_width, alpha=a.alpha, beta=a.beta,
                       chunk_seconds=a.chunk_seconds, stride_seconds=a.stride_seconds, group_by=a.group_by,
                       write_html=not a.no_report, workers=a.workers,
                       tempos=parse_tempos(a.tempos) if a.tempos else None, choices=a.choices,
                       runtime=a.runtime, corruption=corruption)
    keys = ("wer", "wer_ci95", "cer", "cer_ci95", "substitutions", "deletions", "insertions", "num_utterances",
            "normalizer", "decoding")
    summary = {k: m.get(k) for k in keys}
    if corruption is not None:
        summary["robustness"] = {r["condition"]: {"wer": r["wer"], "cer": r["cer"]} for r in m["robustness"]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
