#!/usr/bin/env python
"""Cut long recordings into training utterances by aligning their transcripts (CTC forced alignment).

Each AUDIO's transcript is the text file beside it with the same name and a .txt suffix (talk.wav ->
talk.txt), or --text FILE for a single recording. Writes OUTPUT/metadata.csv (file_name, text, speaker,
source, start, end, confidence) and one wav per segment (the recording's own sample rate, mono): an audiofolder
that scripts/train.py reads as data.train=OUTPUT. OUTPUT/segment_report.json lists what was skipped or
dropped, and why.

  python scripts/segment.py --model runs/quickstart --output my_corpus/segments talks/*.wav
  python scripts/train.py recipes/asr/custom_audio.yaml data.train=my_corpus/segments ...

Segments last at most --max-seconds, cut at the widest pauses between words; --min-confidence drops
segments whose words the model finds improbable (a transcript that does not match the audio there).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli import entry_point, setup_logging
from pipeline.data.segment import DEFAULT_MAX_SECONDS, DEFAULT_PAD, segment_recordings
from pipeline.errors import DataError
from pipeline.evaluation.evaluate import add_runtime_argument


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a CTC model directory (or Hub id) whose vocabulary spells the transcripts")
    p.add_argument("--output", required=True, help="folder for the segments and metadata.csv")
    p.add_argument("--text", help="the transcript of the one AUDIO (default: AUDIO's name with .txt)")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="longest segment (seconds)")
    p.add_argument("--pad", type=float, default=DEFAULT_PAD,
                   help="seconds of the pause kept before and after a segment's words (at most half the pause)")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="drop segments whose mean word confidence is lower (0-1; default: keep all)")
    p.add_argument("--speaker", help="speaker column of every segment (default: the recording's file name)")
    p.add_argument("--normalizer", help="text normaliser (default: the model's)")
    add_runtime_argument(p)
    p.add_argument("audio", nargs="+", help="long recordings (wav, flac, ogg, mp3)")
    a = p.parse_args()
    if a.text and len(a.audio) != 1:
        raise DataError("--text names the transcript of one recording: give one AUDIO, or put each transcript "
                        "beside its audio as NAME.txt")
    pairs = [(path, a.text or str(Path(path).with_suffix(".txt"))) for path in a.audio]
    setup_logging()
    report = segment_recordings(a.model, pairs, a.output, max_seconds=a.max_seconds, pad=a.pad,
                                min_confidence=a.min_confidence, speaker=a.speaker, normalizer=a.normalizer,
                                runtime=a.runtime)
    print(json.dumps({k: report[k] for k in ("segments", "seconds")}
                     | {"skipped": len(report["skipped"]), "dropped": len(report["dropped"])}))
    if report["skipped"]:
        for item in report["skipped"]:
            print(f"skipped {item['audio']}: {item['reason']}")


if __name__ == "__main__":
    main()
