#!/usr/bin/env python
"""Copy synthesis: audio -> the vocoder's log-mel -> waveform, written as OUT/<input name>.wav.

The output is at the vocoder's sample rate (inputs are resampled) and as long as the input.
Example:
  python scripts/vocode.py --model runs/vocoder_quickstart --output runs/vocoded --steps 6 data/synth/test/000000.wav
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
    p.add_argument("--model", required=True, help="vocoder directory")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's, 6)")
    p.add_argument("--sampler", choices=("fast", "ddim", "dpm", "ddpm"), help="default: the model's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3)")
    a = p.parse_args()
    setup_logging()
    import torch

    from pipeline.audio import read_audio, write_wav
    from pipeline.tts.inference import Vocoder

    if a.threads:
        torch.set_num_threads(a.threads)
    vocoder = Vocoder.from_pretrained(a.model)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    names = [Path(x).stem for x in a.audio]
    if len(set(names)) != len(names):
        raise DataError("two inputs share a file name: their outputs would overwrite each other")
    for path, name in zip(a.audio, names, strict=True):
        audio, _ = read_audio(path, vocoder.sample_rate)
        t0 = time.perf_counter()
        wave = vocoder.copy_synthesis(audio, sampler=a.sampler, steps=a.steps, seed=a.seed)
        elapsed = time.perf_counter() - t0
        target = out / f"{name}.wav"
        write_wav(str(target), wave, vocoder.sample_rate)
        seconds = len(audio) / vocoder.sample_rate
        print(f"{target}: {seconds:.2f} s at {vocoder.sample_rate} Hz, synthesis {elapsed:.2f} s (RTF {elapsed / seconds:.2f})")


if __name__ == "__main__":
    main()
