"""`make demo`: the offline main job, end to end.

Synthesise a labelled corpus with espeak-ng (train and test voices disjoint), train the quickstart
recipe, evaluate on the held-out voices, transcribe a few examples, and print a short report.
Everything runs offline on a CPU; every step writes its outputs under `runs/` and `data/`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from pipeline.cli import entry_point, setup_logging
from pipeline.config import DataSpec, load_recipe

logger = logging.getLogger("pipeline.demo")


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="recipes/asr/quickstart.yaml")
    p.add_argument("--corpus", default="data/synth")
    p.add_argument("--train-utterances", type=int, default=3000)
    p.add_argument("--test-utterances", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="recipe overrides, e.g. train.max_minutes=5")
    a = p.parse_args()
    setup_logging()
    started = time.monotonic()

    from pipeline.synth.corpus import synthesize_corpus

    print(f"[1/4] synthesising the corpus into {a.corpus} (espeak-ng, disjoint train/test voices)", flush=True)
    info = synthesize_corpus(a.corpus, n_train=a.train_utterances, n_test=a.test_utterances, seed=a.seed,
                             sample_rate=16000, progress=True)
    corpus_minutes = (time.monotonic() - started) / 60

    recipe = load_recipe(a.recipe, [f"data.train={a.corpus}/train", f"data.eval={a.corpus}/test", *a.overrides])
    out = Path(recipe.output_dir)
    print(f"[2/4] training {a.recipe} -> {out}", flush=True)
    from pipeline.training.loop import run_training

    t0 = time.monotonic()
    summary = run_training(recipe)
    train_minutes = (time.monotonic() - t0) / 60

    print(f"[3/4] evaluating on the held-out voices ({a.corpus}/test)", flush=True)
    from pipeline.evaluation.evaluate import evaluate_model

    eval_dir = out / "eval"
    metrics = evaluate_model(str(out), DataSpec(path=f"{a.corpus}/test"), eval_dir)

    print("[4/4] transcribing a few held-out examples", flush=True)
    rows = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    examples = rows[: recipe.eval.examples]
    for r in examples:
        mark = "ok " if r["reference"] == r["hypothesis"] else "err"
        print(f"  [{mark}] {Path(r['audio']).name} ({r['speaker']})\n        ref: {r['reference']}\n        hyp: {r['hypothesis']}")

    total = (time.monotonic() - started) / 60
    print()
    print("=" * 72)
    print("Demo report")
    print("=" * 72)
    print(f"corpus          : {info['counts']['train']} train / {info['counts']['test']} test utterances, "
          f"{info['hours']['train']:.2f} h / {info['hours']['test']:.2f} h, held-out voices: "
          f"{len(set(r['speaker'] for r in rows))}")
    print(f"model           : {recipe.model.family}, {summary.get('steps')} steps, stopped by {summary.get('stop_reason')}")
    print(f"WER (held-out)  : {metrics['wer'] * 100:.2f}%   CER: {metrics['cer'] * 100:.2f}%   "
          f"({metrics['num_utterances']} utterances, normaliser '{metrics['normalizer']}')")
    print(f"minutes         : corpus {corpus_minutes:.1f}, training {train_minutes:.1f}, total {total:.1f}")
    print(f"model directory : {out}  (loads in transformers.pipeline('automatic-speech-recognition'))")
    print(f"evaluation      : {eval_dir / 'metrics.json'}, {eval_dir / 'predictions.jsonl'}")
    print(f"curves          : {out / 'training_curves.png'}, TensorBoard logs in {out / 'logs'}")
    print("=" * 72)


if __name__ == "__main__":
    main()
