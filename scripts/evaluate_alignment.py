#!/usr/bin/env python
"""How exact a CTC aligner's phoneme durations are (`acoustic.durations: ctc`), where the truth is known.

On a split of a synthetic corpus (scripts/synth_corpus.py), espeak-ng's own phoneme events are the true
boundaries; the aligner (an ASR model directory or Hub id with a character vocabulary) times the same
utterances from their audio. Prints, and writes to --output, the error of every phoneme start in ms
(median, mean, 90th percentile, share within 20 and 40 ms).
Example:
  python scripts/evaluate_alignment.py --aligner runs/quickstart --data data/synth/test --limit 200
"""

from __future__ import annotations

import argparse
import json

from pipeline.cli import entry_point, setup_logging


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aligner", required=True, help="character CTC model directory (or Hub id)")
    p.add_argument("--data", required=True, help="train/ or test/ folder of a synthetic corpus")
    p.add_argument("--voice", default="en-us", help="espeak-ng voice that phonemises the text (acoustic.voice)")
    p.add_argument("--limit", type=int, help="the first N utterances")
    p.add_argument("--output", help="write the numbers to this JSON file")
    a = p.parse_args()
    setup_logging()
    from pipeline.evaluation.evaluate import default_cache_dir
    from pipeline.io import write_json
    from pipeline.tts.alignment import CTCAligner, boundary_errors

    result = boundary_errors(CTCAligner(a.aligner, voice=a.voice), a.data, default_cache_dir(), limit=a.limit)
    if a.output:
        write_json(a.output, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
