"""WER under noise and reverberation: the same test set, corrupted the same way for every model.

A WER on clean test audio says little about the recordings users will bring. `evaluate.py --noise SPEC|synthetic
--snr 20,10,5,0 [--reverb SPEC|synthetic --rt60 0.5]` scores the set again under each condition. An utterance's
corruption depends only on its row and `--corrupt-seed`: the same noise window at every SNR (scaled, nothing else),
and the same for every model and run, so two models' WERs under a condition compare pairwise
(`scripts/compare.py` on the condition folders).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import AugmentConfig, DataSpec
from pipeline.data.noise import SYNTHETIC, Corruptor, Recordings

DEFAULT_SNRS = [20.0, 10.0, 5.0, 0.0]


@dataclass
class Corruption:
    """What `evaluate.py --noise/--snr/--reverb/--rt60/--corrupt-seed` asks for."""

    noise: DataSpec | None = None  # noise recordings, or DataSpec("synthetic")
    snrs: list[float] = field(default_factory=lambda: list(DEFAULT_SNRS))
    reverb: DataSpec | None = None  # impulse responses, or DataSpec("synthetic")
    rt60: float = 0.5  # seconds, synthetic rooms
    seed: int = 0

    def conditions(self) -> list[tuple[str, float | None]]:
        """(folder name, SNR) per condition; every condition is reverberant when `reverb` is set."""
        if self.noise is None:
            return [("reverb", None)]
        room = "reverb_" if self.reverb is not None else ""
        return [(f"{room}snr{snr:g}", snr) for snr in self.snrs]

    @property
    def synthetic_rooms(self) -> bool:
        return self.reverb is not None and self.reverb.path == SYNTHETIC

    def describe(self, snr: float | None) -> str:
        """What a condition does to the audio (`snr` None: the noise without its level, for titles)."""
        parts = [f"noise {self.noise.path}" + (f" at {snr:g} dB SNR" if snr is not None else "")] if self.noise else []
        if self.reverb is not None:
            parts.append(f"reverb {self.reverb.path}" + (f" (RT60 {self.rt60:g} s)" if self.synthetic_rooms else ""))
        return ", ".join(parts)


class FixedCorruptor:
    """`corrupt(row_index, audio)`: the condition's corruption of one utterance, a function of the row and seed alone."""

    def __init__(self, corruption: Corruption, snr: float | None, sample_rate: int, noise: Recordings | None,
                 rirs: Recordings | None) -> None:
        cfg = AugmentConfig(noise=corruption.noise, noise_snr=[snr or 0.0, snr or 0.0], noise_prob=1.0,
                            reverb=corruption.reverb, reverb_rt60=[corruption.rt60, corruption.rt60], reverb_prob=1.0)
        self._corruptor = Corruptor(cfg, sample_rate, noise=noise, rirs=rirs)
        self._noise, self._reverb, self._seed = snr is not None and corruption.noise is not None, corruption.reverb is not None, corruption.seed

    def __call__(self, index: int, audio: np.ndarray) -> np.ndarray:
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
            torch.manual_seed(self._seed * 1_000_003 + index)
            return self._corruptor(audio, reverb=self._reverb, noise=self._noise)


def plot_robustness(path: Path, clean: float, rows: list[dict[str, Any]], title: str) -> None:
    """WER against SNR (falling to the right), the clean WER as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    snrs = [r["snr"] for r in rows]
    ax.plot(snrs, [100 * r["wer"] for r in rows], "o-", label="WER under noise")
    low = [100 * r["wer_ci95"][0] for r in rows if r.get("wer_ci95")]
    high = [100 * r["wer_ci95"][1] for r in rows if r.get("wer_ci95")]
    if len(low) == len(rows):
        ax.fill_between(snrs, low, high, alpha=0.2, label="95% interval")
    ax.axhline(100 * clean, linestyle="--", color="gray", label="clean")
    ax.set_xticks(snrs)
    ax.invert_xaxis()
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("WER (%)")
    ax.set_title("\n".join(textwrap.shorten(line, 80) for line in title.splitlines()), fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def add_corruption_arguments(parser: Any) -> None:
    parser.add_argument("--noise", help="also score the set with this noise mixed in: `synthetic` (coloured Gaussian "
                                        "noise) or a folder / manifest / Hub dataset of noise recordings")
    parser.add_argument("--snr", help=f"with --noise: signal-to-noise ratios in dB, one condition each (default "
                                      f"{','.join(f'{s:g}' for s in DEFAULT_SNRS)})")
    parser.add_argument("--reverb", help="also score the set reverberated (with --noise: every condition): `synthetic` "
                                         "rooms or a folder / manifest of room impulse responses")
    parser.add_argument("--rt60", type=float, default=None, help="synthetic rooms' reverberation time, seconds (0.5)")
    parser.add_argument("--corrupt-seed", type=int, default=None,
                        help="which noise window and room each utterance gets (0); the same seed, the same audio")


def parse_corruption(args: Any) -> Corruption | None:
    """The Corruption the arguments ask for, or None; options that mean nothing alone are errors."""
    from pipeline.errors import RecipeError

    if args.noise is None and args.reverb is None:
        for flag, value in (("--snr", args.snr), ("--rt60", args.rt60), ("--corrupt-seed", args.corrupt_seed)):
            if value is not None:
                raise RecipeError(f"{flag} needs --noise or --reverb")
        return None
    if args.snr is not None and args.noise is None:
        raise RecipeError("--snr needs --noise")
    if args.rt60 is not None and args.reverb != SYNTHETIC:
        raise RecipeError("--rt60 sets synthetic rooms: it needs --reverb synthetic")
    snrs = list(DEFAULT_SNRS)
    if args.snr is not None:
        try:
            snrs = [float(x) for x in args.snr.split(",") if x.strip()]
        except ValueError:
            raise RecipeError(f"--snr: expected comma-separated numbers (dB), got {args.snr!r}") from None
        if not snrs or len(set(snrs)) != len(snrs):
            raise RecipeError(f"--snr: expected distinct comma-separated numbers (dB), got {args.snr!r}")
    rt60 = 0.5 if args.rt60 is None else args.rt60
    if not 0 < rt60 <= 10:
        raise RecipeError(f"--rt60: expected seconds in (0, 10], got {rt60}")
    return Corruption(noise=DataSpec(args.noise) if args.noise else None, snrs=snrs,
                      reverb=DataSpec(args.reverb) if args.reverb else None, rt60=rt60, seed=args.corrupt_seed or 0)
