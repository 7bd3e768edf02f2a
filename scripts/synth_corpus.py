"""Synthesise the offline espeak-ng speech corpus: python scripts/synth_corpus.py OUT_DIR [options].

A thin CLI over ``pipeline.synth.corpus.synthesize_corpus`` (the package must be
installed, e.g. ``pip install -e .``).
"""

from __future__ import annotations

import argparse
import sys

from pipeline.errors import PipelineError
from pipeline.synth.corpus import synthesize_corpus


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build or reuse the corpus, print a one-line summary."""
    ap = argparse.ArgumentParser(description="Synthesise an audiofolder speech corpus with espeak-ng.")
    ap.add_argument(
        "out_dir", help="output folder (created atomically; reused if made with the same options)"
    )
    ap.add_argument("--train", type=int, default=3000, help="number of training utterances (default 3000)")
    ap.add_argument("--test", type=int, default=200, help="number of test utterances (default 200)")
    ap.add_argument(
        "--seed", type=int, default=0, help="random seed for texts, voices and prosody (default 0)"
    )
    ap.add_argument("--sample-rate", type=int, default=16000, help="output sample rate in Hz (default 16000)")
    ap.add_argument("--workers", type=int, default=1, help="synthesis processes (default 1)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        info = synthesize_corpus(
            args.out_dir,
            n_train=args.train,
            n_test=args.test,
            seed=args.seed,
            sample_rate=args.sample_rate,
            progress=not args.quiet,
            workers=args.workers,
        )
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts, hours, voices = info["counts"], info["hours"], info["voices"]
    verb = "reused" if info["reused"] else f"wrote in {info['synthesis']['seconds']:.0f} s"
    print(
        f"{info['path']}: {verb}; train {counts['train']} utts / {hours['train']:.2f} h / {len(voices['train'])} voices, "
        f"test {counts['test']} utts / {hours['test']:.2f} h / {len(voices['test'])} voices "
        f"(held-out variants {', '.join(info['held_out_variants'])}), {info['sample_rate']} Hz"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
