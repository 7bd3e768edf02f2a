#!/usr/bin/env python
"""Copy-synthesis evaluation of a vocoder: OUT/metrics.json (vocoder and Griffin-Lim), OUT/utterances.jsonl.

Metrics: log-mel L1 (the vocoder's mel preset), multi-resolution STFT distance, wideband PESQ,
STOI, and the real-time factor of synthesis (seconds of compute per second of audio, this machine).
Example:
  python scripts/evaluate_vocoder.py --model runs/vocoder_quickstart --data data/synth/test \\
      --output runs/vocoder_quickstart/eval --steps 6 --limit 20
"""

from __future__ import annotations

import argparse
import json

from pipeline.cli import entry_point, setup_logging
from pipeline.config import DataSpec


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="vocoder directory (scripts/train.py with task: vocoder)")
    p.add_argument("--data", required=True, help="folder, .csv/.jsonl manifest, or Hub dataset name")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--split", help="Hub split, or sub-folder of --data")
    p.add_argument("--config", help="Hub dataset configuration")
    p.add_argument("--audio-column")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's, 6)")
    p.add_argument("--sampler", choices=("fast", "ddim", "dpm", "ddpm"), help="default: the model's")
    p.add_argument("--limit", type=int, help="evaluate this many utterances, evenly spread over the data")
    p.add_argument("--max-seconds", type=float, help="cut each utterance to this length")
    p.add_argument("--write-audio", type=int, default=3, help="write the first N outputs as wavs (default 3)")
    p.add_argument("--no-griffin-lim", action="store_true", help="skip the Griffin-Lim floor")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    setup_logging()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    from pipeline.tts.evaluate import evaluate_vocoder

    spec = DataSpec(path=a.data, config=a.config, split=a.split, audio_column=a.audio_column)
    m = evaluate_vocoder(a.model, spec, a.output, steps=a.steps, sampler=a.sampler, limit=a.limit, max_seconds=a.max_seconds,
                         write_audio=a.write_audio, seed=a.seed, griffin_lim=not a.no_griffin_lim)
    print(json.dumps({k: m[k] for k in ("num_utterances", "sampler", "steps", "vocoder", "griffin_lim")}))


if __name__ == "__main__":
    main()
