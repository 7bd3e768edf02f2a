"""Bootstrap confidence intervals for corpus error rates, and paired comparisons of two systems.

A corpus WER is a ratio of sums, ``sum(errors) / sum(reference words)``, over utterances. Its
uncertainty comes from *which* utterances (and speakers) the test set happens to hold, so the
interval is found by resampling them with replacement and recomputing the ratio (percentile
bootstrap). Utterances of one speaker are not independent: when a speaker column names at least
two speakers, whole speakers are resampled (a cluster bootstrap), which gives the wider, honest
interval. Everything is vectorised over resamples with numpy from per-unit error/length counts and
seeded, so the same predictions always give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

N_RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
_MAX_CELLS = 4_000_000  # resample-index elements held in memory at once


def cluster_sums(values: Sequence[Sequence[float]], clusters: Sequence[Any] | None) -> tuple[np.ndarray, int]:
    """Per-cluster sums of each row of `values` (shape (k, n) -> (k, m)); no clusters: unchanged."""
    arr = np.asarray(values, dtype=np.float64)
    if clusters is None:
        return arr, arr.shape[1]
    _, inverse = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    m = int(inverse.max()) + 1 if len(inverse) else 0
    out = np.zeros((arr.shape[0], m))
    for i in range(arr.shape[0]):
        out[i] = np.bincount(inverse, weights=arr[i], minlength=m)
    return out, m


def resampled_sums(units: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Sums of each row of `units` (k, n) over `n_resamples` bootstrap resamples -> (k, n_resamples).

    Every row uses the same resamples (paired). Indices are drawn in blocks to bound memory.
    """
    k, n = units.shape
    rng = np.random.default_rng(seed)
    out = np.empty((k, n_resamples))
    block = max(1, _MAX_CELLS // max(n, 1))
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int32 if n < 2**31 else np.int64)
        for row in range(k):  # one row at a time: 1-D take is much faster than 2-D fancy indexing
            out[row, start:stop] = np.take(units[row], idx).sum(axis=-1)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _interval(samples: np.ndarray, level: float) -> list[float] | None:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return [float(lo), float(hi)]


def use_clusters(clusters: Sequence[Any] | None) -> bool:
    """Cluster (speaker) resampling needs at least two distinct, non-empty cluster names."""
    if clusters is None:
        return False
    names = {str(c) for c in clusters}
    return len(names) >= 2 and "" not in names


def bootstrap_ci(errors: Sequence[float], lengths: Sequence[float], clusters: Sequence[Any] | None = None,
                 n_resamples: int = N_RESAMPLES, seed: int = SEED, level: float = LEVEL) -> list[float] | None:
    """Percentile bootstrap interval of ``sum(errors) / sum(lengths)``; None with no data.

    `clusters` (e.g. the speaker of each utterance) switches to resampling whole clusters.
    """
    if len(errors) != len(lengths):
        raise ValueError(f"{len(errors)} error counts but {len(lengths)} lengths")
    if len(errors) == 0:
        return None
    units, _ = cluster_sums([errors, lengths], clusters if use_clusters(clusters) else None)
    sums = resampled_sums(units, n_resamples, seed)
    return _interval(_ratio(sums[0], sums[1]), level)


def confidence_intervals(rows: Sequence[dict[str, Any]], cluster_column: str | None = "speaker",
                         n_resamples: int = N_RESAMPLES, seed: int = SEED, level: float = LEVEL) -> dict[str, Any]:
    """``wer_ci95``, ``cer_ci95`` and ``ci_method`` for metrics.json from per-utterance rows."""
    if len(rows) == 0:
        return {"wer_ci95": None, "cer_ci95": None, "ci_method": "none (no utterances)"}
    clusters = [r.get(cluster_column, "") for r in rows] if cluster_column else None
    clustered = use_clusters(clusters)
    units, m = cluster_sums(
        [[r["word_errors"] for r in rows], [r["words"] for r in rows],
         [r["char_errors"] for r in rows], [r["chars"] for r in rows]], clusters if clustered else None)
    sums = resampled_sums(units, n_resamples, seed)
    what = f"{m} {cluster_column}s (cluster bootstrap)" if clustered else f"{m} utterances"
    pct = f"{level * 100:g}"
    return {
        f"wer_ci{pct}": _interval(_ratio(sums[0], sums[1]), level),
        f"cer_ci{pct}": _interval(_ratio(sums[2], sums[3]), level),
        "ci_method": f"percentile bootstrap over {what}, {n_resamples} resamples, seed {seed}",
    }


def paired_bootstrap(errors_a: Sequence[float], errors_b: Sequence[float], lengths: Sequence[float],
                     clusters: Sequence[Any] | None = None, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                     level: float = LEVEL) -> dict[str, Any]:
    """Compare two systems scored on the same utterances (same references, so the same lengths).

    Each resample draws the same utterances (or speakers) for both systems. Returns the two rates,
    the difference B - A with its interval, and ``prob_b_better``: the share of resamples in which
    B's rate is lower than A's (ties count as not better).
    """
    if not len(errors_a) == len(errors_b) == len(lengths):
        raise ValueError("paired_bootstrap: errors_a, errors_b and lengths must have the same length")
    if len(lengths) == 0:
        raise ValueError("paired_bootstrap: no utterances to compare")
    clustered = use_clusters(clusters)
    units, m = cluster_sums([errors_a, errors_b, lengths], clusters if clustered else None)
    total = units.sum(axis=1)
    rate_a, rate_b = _ratio(total[0:1], total[2:3])[0], _ratio(total[1:2], total[2:3])[0]
    sums = resampled_sums(units, n_resamples, seed)
    ra, rb = _ratio(sums[0], sums[2]), _ratio(sums[1], sums[2])
    valid = np.isfinite(ra) & np.isfinite(rb)
    pct = f"{level * 100:g}"
    return {
        "a": float(rate_a), "b": float(rate_b), "diff": float(rate_b - rate_a),
        f"diff_ci{pct}": _interval(rb - ra, level),
        "prob_b_better": float(np.mean(rb[valid] < ra[valid])) if valid.any() else None,
        "units": m, "clustered": clustered,
    }
