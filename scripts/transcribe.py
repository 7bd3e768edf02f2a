#!/usr/bin/env python
"""Transcribe audio files: prints one JSON object per file ({"audio": ..., "text": ...}).

Example: python scripts/transcribe.py --model runs/quickstart a.wav b.flac
"""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.audio import read_audio
from pipeline.cli import entry_point
from pipeline.errors import DataError
from pipeline.evaluation.evaluate import load_model_dir
from pipeline.evaluation.inference import Transcriber


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory (or Hub id)")
    p.add_argument("--batch-seconds", type=float, default=240.0)
    p.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3)")
    a = p.parse_args()
    model, fe, tok, _ = load_model_dir(a.model)
    audios, names, failed = [], [], 0
    for path in a.audio:
        try:
            audios.append(read_audio(path, fe.sampling_rate)[0])
            names.append(path)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    texts = Transcriber(model, fe, tok, batch_seconds=a.batch_seconds).transcribe(audios)
    for name, text in zip(names, texts, strict=True):
        print(json.dumps({"audio": name, "text": text}, ensure_ascii=False), flush=True)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
