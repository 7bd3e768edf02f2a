#!/usr/bin/env python
"""Round-trip intelligibility of text-to-speech: synthesise, transcribe with an ASR model of this project, score.

  python scripts/evaluate_tts.py --acoustic runs/tts_quickstart --vocoder runs/vocoder_quickstart \\
      --asr runs/quickstart --data data/synth/test --limit 50 --output runs/tts_quickstart/roundtrip
  python scripts/evaluate_tts.py --acoustic A --vocoder V --asr M --text-file lines.txt --output OUT

With --data (a spec with transcripts and audio) the ASR model also transcribes the original recordings
of the same sentences, and the log-mel distance to them is reported (after time warping). Griffin-Lim
on the same predicted mels is scored too (--no-griffin-lim to skip). Writes OUT/metrics.json,
OUT/utterances.jsonl and a few wavs under OUT/audio/.
"""

from __future__ import annotations

import argparse
import json

from pipeline.cli import entry_point, setup_logging
from pipeline.config import DataSpec


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--acoustic", required=True, help="acoustic model directory (task: acoustic)")
    p.add_argument("--vocoder", help="vocoder directory (task: vocoder); without it only Griffin-Lim is scored")
    p.add_argument("--asr", required=True, help="ASR model directory that transcribes the syntheses")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="data spec with transcripts (and recordings): e.g. data/synth/test")
    src.add_argument("--text-file", help="UTF-8 file, one sentence per line")
    p.add_argument("--output", required=True)
    p.add_argument("--limit", type=int, help="at most N sentences, spread over the set")
    p.add_argument("--steps", type=int, help="vocoder sampling steps (default: the vocoder's)")
    p.add_argument("--sampler", choices=("fast", "ddim", "dpm", "ddpm"), help="vocoder sampler (default: the vocoder's)")
    p.add_argument("--speaking-rate", type=float, default=1.0)
    p.add_argument("--speaker", help="voice of a multi-speaker acoustic model (default: its default speaker)")
    p.add_argument("--no-griffin-lim", action="store_true", help="do not score Griffin-Lim on the same mels")
    p.add_argument("--write-audio", type=int, default=5, help="wavs written for the first N sentences")
    a = p.parse_args()
    if a.no_griffin_lim and not a.vocoder:
        p.error("--no-griffin-lim needs --vocoder (otherwise nothing is synthesised)")
    setup_logging()
    from pipeline.tts.roundtrip import evaluate_tts

    metrics = evaluate_tts(a.acoustic, a.vocoder, a.asr, a.output, data=DataSpec(path=a.data) if a.data else None,
                           text_file=a.text_file, limit=a.limit, steps=a.steps, sampler=a.sampler,
                           speaking_rate=a.speaking_rate, griffin_lim=not a.no_griffin_lim, write_audio=a.write_audio,
                           speaker=a.speaker)
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
