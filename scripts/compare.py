#!/usr/bin/env python
"""Compare two evaluations of the same test set: WER of each, the difference with a paired bootstrap
95% interval, and the probability that B is better than A.

A and B are output folders of scripts/evaluate.py (their predictions.jsonl) on the same utterances
with the same references. Each bootstrap resample draws the same utterances (or the same speakers,
when the predictions name at least two) for both systems; `prob_b_better` is the share of resamples
in which B's WER is lower than A's.

A and B may also be round-trip folders of scripts/evaluate_tts.py (their utterances.jsonl, the same
sentences): `--system tts` (the default), `griffin_lim` or `recording` picks whose transcripts are scored.
Sentences are resampled as units there (the file names no speaker).

Example: python scripts/compare.py runs/quickstart/eval runs/quickstart/eval_lm --output compare.json
         python scripts/compare.py runs/tts_a/roundtrip runs/tts_b/roundtrip --system griffin_lim
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.cli import entry_point
from pipeline.errors import DataError


def load_roundtrip(path: Path, system: str) -> list[dict[str, Any]]:
    """evaluate_tts.py's utterances.jsonl as prediction rows of one system: counts scored here, as evaluate.py does."""
    from pipeline.evaluation.metrics import error_rates

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    field = f"{system}_hypothesis"
    for n, r in enumerate(rows, 1):
        if field not in r or "reference" not in r:
            systems = sorted(k.removesuffix("_hypothesis") for k in r if k.endswith("_hypothesis"))
            raise DataError(f"{path}:{n}: no {field} (--system: one of {', '.join(systems) or 'none'})")
    counts = error_rates([r["reference"] for r in rows], [r[field] for r in rows])["per_utterance"]
    return [{"audio": r["text"], "reference": r["reference"], "hypothesis": r[field], **c}
            for r, c in zip(rows, counts, strict=True)]


def load_predictions(folder: str, system: str = "tts") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    path = Path(folder) / "predictions.jsonl" if Path(folder).is_dir() else Path(folder)
    roundtrip = Path(folder) / "utterances.jsonl" if Path(folder).is_dir() else Path(folder)
    if roundtrip.name == "utterances.jsonl" and roundtrip.is_file() and not path.is_file():
        return load_roundtrip(roundtrip, system), {}
    if not path.is_file():
        raise DataError(f"{folder}: no predictions.jsonl (an output folder of scripts/evaluate.py) or utterances.jsonl "
                        "(of scripts/evaluate_tts.py)")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise DataError(f"{path}:{n}: not a JSON line") from None
    for n, r in enumerate(rows, 1):
        missing = [k for k in ("audio", "reference", "word_errors", "words", "char_errors", "chars") if k not in r]
        if missing:
            raise DataError(f"{path}:{n}: missing {', '.join(missing)}")
    metrics_path = path.parent / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    return rows, metrics


def pair_rows(a: list[dict[str, Any]], b: list[dict[str, Any]], name_a: str, name_b: str) -> list[dict[str, Any]]:
    """B's rows in A's order; a one-line DataError when the utterances or references differ."""
    def keyed(rows: list[dict[str, Any]], name: str) -> dict[tuple[str, int], dict[str, Any]]:
        seen: dict[str, int] = {}
        out = {}
        for r in rows:  # the same file may appear twice: number its occurrences
            k = str(r["audio"])
            seen[k] = seen.get(k, 0) + 1
            out[(k, seen[k])] = r
        return out

    ka, kb = keyed(a, name_a), keyed(b, name_b)
    if ka.keys() != kb.keys():
        only_a, only_b = sorted(ka.keys() - kb.keys()), sorted(kb.keys() - ka.keys())
        example = (only_a or only_b)[0][0]
        raise DataError(f"{name_a} and {name_b} are not evaluations of the same utterances ({len(ka)} vs {len(kb)} "
                        f"rows; {len(only_a)} only in A, {len(only_b)} only in B, e.g. {example})")
    for key, ra in ka.items():
        if ra["reference"] != kb[key]["reference"]:
            raise DataError(f"{name_a} and {name_b} have different references for {key[0]} "
                            f"({ra['reference']!r} vs {kb[key]['reference']!r}): different normalisers or data?")
    return [kb[key] for key in ka]


def compare(dir_a: str, dir_b: str, n_resamples: int = 1000, seed: int = 0, system: str = "tts") -> dict[str, Any]:
    from pipeline.evaluation.stats import paired_bootstrap

    a, ma = load_predictions(dir_a, system)
    b_raw, mb = load_predictions(dir_b, system)
    if not a:
        raise DataError(f"{dir_a}: no predictions")
    b = pair_rows(a, b_raw, dir_a, dir_b)
    if ma.get("normalizer") and mb.get("normalizer") and ma["normalizer"] != mb["normalizer"]:
        raise DataError(f"{dir_a} used the {ma['normalizer']!r} normaliser but {dir_b} used {mb['normalizer']!r}")
    speakers = [str(r.get("speaker") or "") for r in a]
    words = paired_bootstrap([r["word_errors"] for r in a], [r["word_errors"] for r in b], [r["words"] for r in a],
                             clusters=speakers, n_resamples=n_resamples, seed=seed)
    chars = paired_bootstrap([r["char_errors"] for r in a], [r["char_errors"] for r in b], [r["chars"] for r in a],
                             clusters=speakers, n_resamples=n_resamples, seed=seed)
    unit = f"{words['units']} speakers (cluster bootstrap)" if words["clustered"] else f"{words['units']} utterances"
    return {
        "a": {"dir": str(dir_a), "wer": words["a"], "cer": chars["a"], "decoding": ma.get("decoding")},
        "b": {"dir": str(dir_b), "wer": words["b"], "cer": chars["b"], "decoding": mb.get("decoding")},
        "num_utterances": len(a),
        "reference_words": int(sum(r["words"] for r in a)),
        "wer_diff": words["diff"], "wer_diff_ci95": words["diff_ci95"],
        "cer_diff": chars["diff"], "cer_diff_ci95": chars["diff_ci95"],
        "prob_b_better": words["prob_b_better"],
        "method": f"paired percentile bootstrap over {unit}, {n_resamples} resamples, seed {seed}; diff = B - A",
    }


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="evaluation folder A (baseline)")
    p.add_argument("b", help="evaluation folder B (candidate)")
    p.add_argument("--output", help="write the JSON here instead of stdout")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system", default="tts", choices=["tts", "griffin_lim", "recording"],
                   help="round-trip folders (evaluate_tts.py): whose transcripts to score")
    args = p.parse_args()
    result = compare(args.a, args.b, args.resamples, args.seed, args.system)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.output:
        from pipeline.io import write_text

        write_text(args.output, text + "\n")
        print(f"WER A {result['a']['wer']:.4f}  B {result['b']['wer']:.4f}  B-A {result['wer_diff']:+.4f} "
              f"{result['wer_diff_ci95']}  P(B better) {result['prob_b_better']:.3f}", file=sys.stderr)
    else:
        print(text)


if __name__ == "__main__":
    main()
