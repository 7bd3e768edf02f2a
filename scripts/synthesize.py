#!/usr/bin/env python
"""Text to speech: an acoustic model (text -> mel) and a vocoder (mel -> waveform) of the same mel preset.

One text:   python scripts/synthesize.py --acoustic runs/tts_quickstart --vocoder runs/vocoder_quickstart \\
                --text "Hello there." --output hello.wav
Many lines: python scripts/synthesize.py --acoustic A --vocoder V --text-file lines.txt --output-dir out/
            (writes out/0000.wav, out/0001.wav, ... in line order; empty lines are refused)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.cli import entry_point, setup_logging
from pipeline.errors import DataError


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--acoustic", required=True, help="acoustic model directory (task: acoustic)")
    p.add_argument("--vocoder", required=True, help="vocoder directory (task: vocoder)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="text to speak (with --output)")
    src.add_argument("--text-file", help="UTF-8 file, one utterance per line (with --output-dir)")
    p.add_argument("--output", help="output wav (with --text)")
    p.add_argument("--output-dir", help="output folder (with --text-file)")
    p.add_argument("--steps", type=int, help="vocoder sampling steps (default: the vocoder's; fast takes 6 or 50)")
    p.add_argument("--sampler", choices=("fast", "ddim", "dpm", "ddpm"), help="vocoder sampler (default: the vocoder's)")
    p.add_argument("--speaking-rate", type=float, default=1.0,
                   help="speed factor: 2.0 speaks twice as fast (predicted durations divided by it)")
    p.add_argument("--voice", help="espeak-ng voice that phonemises the text (default: the acoustic model's)")
    p.add_argument("--speaker", help="voice of a multi-speaker acoustic model (default: its default speaker)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads")
    a = p.parse_args()
    if a.text is not None and not a.output:
        p.error("--text needs --output")
    if a.text_file is not None and not a.output_dir:
        p.error("--text-file needs --output-dir")
    setup_logging()
    import torch

    from pipeline.audio import write_wav
    from pipeline.tts.acoustic import TextToSpeech

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.text is not None:
        if not a.text.strip():
            raise DataError("--text is empty")
        jobs = [(a.text, Path(a.output))]
    else:
        path = Path(a.text_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read the text file ({exc})") from None
        for i, line in enumerate(lines, 1):
            if not line.strip():
                raise DataError(f"{path} line {i}: empty line (one utterance per line)")
        if not lines:
            raise DataError(f"{path}: no lines")
        jobs = [(line, Path(a.output_dir) / f"{i:04d}.wav") for i, line in enumerate(lines)]
    tts = TextToSpeech.from_pretrained(a.acoustic, a.vocoder)
    tts.acoustic.speaker_id(a.speaker)  # an unknown speaker fails before anything is written
    for text, target in jobs:
        t0 = time.perf_counter()
        wave = tts(text, speaking_rate=a.speaking_rate, steps=a.steps, sampler=a.sampler, seed=a.seed,
                   voice=a.voice, speaker=a.speaker)
        elapsed = time.perf_counter() - t0
        target.parent.mkdir(parents=True, exist_ok=True)
        write_wav(str(target), wave, tts.sample_rate)
        seconds = len(wave) / tts.sample_rate
        print(f"{target}: {seconds:.2f} s at {tts.sample_rate} Hz, synthesis {elapsed:.2f} s (RTF {elapsed / max(seconds, 1e-9):.2f})")


if __name__ == "__main__":
    main()
