#!/usr/bin/env python
"""Split one audiofolder into speaker-disjoint train/dev manifests (no audio is copied).

Example: python scripts/split_by_speaker.py my_corpus/all --output my_corpus/splits --dev-fraction 0.2
then: python scripts/train.py recipes/asr/custom_audio.yaml data.train=my_corpus/splits/train.csv data.eval=my_corpus/splits/dev.csv
"""

from __future__ import annotations

import argparse
import json

from pipeline.cli import entry_point
from pipeline.data.split import split_by_column


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="folder with metadata.csv/metadata.jsonl")
    p.add_argument("--output", required=True, help="where train.csv and dev.csv are written")
    p.add_argument("--column", default="speaker", help="metadata column whose values must not cross splits")
    p.add_argument("--dev-fraction", type=float, default=0.2, help="share of rows to put in dev (whole groups)")
    p.add_argument("--dev", nargs="*", help="explicit values of --column for the dev split")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(json.dumps(split_by_column(a.folder, a.output, a.column, a.dev_fraction, a.seed, a.dev)))


if __name__ == "__main__":
    main()
