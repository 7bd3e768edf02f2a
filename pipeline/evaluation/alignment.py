"""Per-utterance word alignments and the error analyses built on them.

An alignment is a list of operations ``[op, ref_word, hyp_word]`` in reading order, from jiwer 4's
``process_words(...).alignments`` (the same Levenshtein alignment that gives the WER):

- ``"="``: a hit (``ref_word == hyp_word``)
- ``"S"``: a substitution of ``ref_word`` by ``hyp_word``
- ``"D"``: a deletion (``hyp_word`` is ``None``: the word was not recognised)
- ``"I"``: an insertion (``ref_word`` is ``None``: the word was not said)

So ``S + D + I`` counted over an alignment is the utterance's word-error count. The helpers here
aggregate many rows of ``predictions.jsonl`` (dicts with ``alignment``, ``word_errors``, ``words``,
``char_errors``, ``chars``, ``duration`` and metadata such as ``speaker``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import jiwer

Op = list  # [op, ref_word | None, hyp_word | None]

HIT, SUB, DEL, INS = "=", "S", "D", "I"
_JIWER_OPS = {"equal": HIT, "substitute": SUB, "replace": SUB, "delete": DEL, "insert": INS}

# Upper edges (seconds) of the utterance-duration bins; the last bin is open-ended.
DURATION_EDGES: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 60.0)


def align_words(reference: str, hypothesis: str) -> list[Op]:
    """Word alignment of two (normalised) strings; empty strings are allowed."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref or not hyp:  # nothing to align: all deletions or all insertions
        return [[DEL, w, None] for w in ref] + [[INS, None, w] for w in hyp]
    chunks = jiwer.process_words(reference, hypothesis).alignments[0]
    ops: list[Op] = []
    for c in chunks:
        op = _JIWER_OPS[c.type]
        r = ref[c.ref_start_idx:c.ref_end_idx]
        h = hyp[c.hyp_start_idx:c.hyp_end_idx]
        if op in (HIT, SUB):
            ops.extend([op, a, b] for a, b in zip(r, h, strict=True))
        elif op == DEL:
            ops.extend([DEL, a, None] for a in r)
        else:
            ops.extend([INS, None, b] for b in h)
    return ops


def count_ops(alignment: Iterable[Sequence[Any]]) -> dict[str, int]:
    """Hits, substitutions, deletions and insertions of one alignment."""
    c = Counter(op[0] for op in alignment)
    return {"hits": c[HIT], "substitutions": c[SUB], "deletions": c[DEL], "insertions": c[INS]}


def top_errors(alignments: Iterable[Sequence[Sequence[Any]]], k: int = 20) -> dict[str, list[dict[str, Any]]]:
    """The `k` most frequent substitutions (ref -> hyp), deletions and insertions over many alignments."""
    subs: Counter[tuple[str, str]] = Counter()
    dels: Counter[str] = Counter()
    ins: Counter[str] = Counter()
    for alignment in alignments:
        for op, r, h in alignment:
            if op == SUB:
                subs[(r, h)] += 1
            elif op == DEL:
                dels[r] += 1
            elif op == INS:
                ins[h] += 1

    def ordered(counter: Counter) -> list:  # by count, then alphabetically: stable across runs
        return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:k]

    return {
        "substitutions": [{"ref": r, "hyp": h, "count": n} for (r, h), n in ordered(subs)],
        "deletions": [{"ref": r, "count": n} for r, n in ordered(dels)],
        "insertions": [{"hyp": h, "count": n} for h, n in ordered(ins)],
    }


def error_pairs(top: dict[str, list[dict[str, Any]]], k: int = 15) -> list[tuple[str, int]]:
    """One list of the most frequent errors of all kinds, labelled ``ref -> hyp`` (∅ for nothing)."""
    pairs = [(f"{e['ref']} \u2192 {e['hyp']}", e["count"]) for e in top.get("substitutions", [])]
    pairs += [(f"{e['ref']} \u2192 \u2205", e["count"]) for e in top.get("deletions", [])]
    pairs += [(f"\u2205 \u2192 {e['hyp']}", e["count"]) for e in top.get("insertions", [])]
    return sorted(pairs, key=lambda p: (-p[1], p[0]))[:k]


def _rate(errors: int, total: int) -> float | None:
    if total == 0:
        return None if errors == 0 else math.inf
    return errors / total


def _summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    we, w = sum(r["word_errors"] for r in rows), sum(r["words"] for r in rows)
    ce, c = sum(r["char_errors"] for r in rows), sum(r["chars"] for r in rows)
    return {
        "utterances": len(rows), "words": w, "word_errors": we, "wer": _rate(we, w),
        "chars": c, "char_errors": ce, "cer": _rate(ce, c),
        "seconds": round(sum(float(r.get("duration") or 0.0) for r in rows), 3),
    }


def breakdown(rows: Sequence[dict[str, Any]], column: str = "speaker") -> list[dict[str, Any]]:
    """Corpus WER/CER per value of `column`, worst first; [] when the column is absent or all empty."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        value = r.get(column)
        groups["" if value is None else str(value)].append(r)
    if not groups or set(groups) == {""}:
        return []
    out = [{column: name, **_summary(g)} for name, g in groups.items()]
    return sorted(out, key=lambda s: (-(s["wer"] if s["wer"] is not None else -1.0), str(s[column])))


def duration_bins(rows: Sequence[dict[str, Any]], edges: Sequence[float] = DURATION_EDGES) -> list[dict[str, Any]]:
    """Corpus WER/CER per utterance-duration bin ``[lo, hi)`` seconds; empty bins are left out."""
    bounds = [0.0, *edges, math.inf]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        members = [r for r in rows if lo <= float(r.get("duration") or 0.0) < hi]
        if members:
            label = f"{lo:g}\u2013{hi:g} s" if math.isfinite(hi) else f"\u2265{lo:g} s"
            out.append({"bin": label, "min_seconds": lo, "max_seconds": hi if math.isfinite(hi) else None,
                        **_summary(members)})
    return out
