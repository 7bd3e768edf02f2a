"""Word and character error rates through jiwer, on strings already normalised by the caller."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jiwer


def _counts(process: Any, ref: str, hyp: str, split: Any) -> tuple[int, int, int, int]:
    """(substitutions, deletions, insertions, reference length) for one pair; empty strings allowed."""
    if not ref:
        return 0, 0, len(split(hyp)), 0
    if not hyp:
        n = len(split(ref))
        return 0, n, 0, n
    out = process(ref, hyp)
    return out.substitutions, out.deletions, out.insertions, out.substitutions + out.deletions + out.hits


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, Any]:
    """Corpus WER/CER = (S + D + I) / N summed over utterances, exactly as jiwer computes them.

    Empty references are allowed (their words count as insertions); when no reference has any
    word, the rate is 0.0 if nothing was inserted, else infinity.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    totals = {"w": [0, 0, 0, 0], "c": [0, 0, 0, 0]}
    per_utt = []
    for ref, hyp in zip(references, hypotheses, strict=True):
        w = _counts(jiwer.process_words, ref, hyp, str.split)
        c = _counts(jiwer.process_characters, ref, hyp, list)
        for acc, vals in ((totals["w"], w), (totals["c"], c)):
            for k in range(4):
                acc[k] += vals[k]
        per_utt.append({"word_errors": sum(w[:3]), "words": w[3], "char_errors": sum(c[:3]), "chars": c[3]})

    def rate(t: list[int]) -> float:
        errors = t[0] + t[1] + t[2]
        if t[3] == 0:
            return 0.0 if errors == 0 else float("inf")
        return errors / t[3]

    return {
        "wer": rate(totals["w"]),
        "cer": rate(totals["c"]),
        "substitutions": totals["w"][0],
        "deletions": totals["w"][1],
        "insertions": totals["w"][2],
        "reference_words": totals["w"][3],
        "char_substitutions": totals["c"][0],
        "char_deletions": totals["c"][1],
        "char_insertions": totals["c"][2],
        "reference_chars": totals["c"][3],
        "num_utterances": len(references),
        "per_utterance": per_utt,
    }
