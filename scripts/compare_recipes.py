#!/usr/bin/env python
"""Train several recipes under the same wall-clock budget and compare them on the same test set.

Example (the table in recipes/asr/README.md):
  python scripts/compare_recipes.py recipes/asr/wav2vec2_quickstart.yaml recipes/asr/conformer_quickstart.yaml \\
      --minutes 10 --output runs/compare --readme recipes/asr/README.md
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from pipeline.cli import entry_point, setup_logging
from pipeline.config import DataSpec, load_recipe
from pipeline.machine import cpu_name

START, END = "<!-- comparison:start -->", "<!-- comparison:end -->"


def _throughput(model_dir: Path, data: str) -> float:
    """Inference audio-seconds per wall-second over the test set (batched, length-sorted)."""
    from pipeline.audio import read_audio
    from pipeline.data.sources import load_spec
    from pipeline.evaluation.evaluate import load_model_dir
    from pipeline.evaluation.inference import Transcriber

    model, fe, tok, _ = load_model_dir(str(model_dir), device="cpu")
    table = load_spec(DataSpec(path=data))
    audios = [read_audio(a, fe.sampling_rate)[0] for a in table["audio"]]
    seconds = sum(len(a) for a in audios) / fe.sampling_rate
    t0 = time.perf_counter()
    Transcriber(model, fe, tok).transcribe(audios)
    return seconds / (time.perf_counter() - t0)


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipes", nargs="+")
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget per recipe")
    p.add_argument("--output", default="runs/compare")
    p.add_argument("--readme", help="markdown file whose comparison block is replaced by the table")
    p.add_argument("overrides", nargs="*", default=[], help="overrides applied to every recipe (after --)")
    a = p.parse_args()
    setup_logging()
    from pipeline.evaluation.evaluate import evaluate_model
    from pipeline.training.loop import run_training

    rows = []
    for path in a.recipes:
        name = Path(path).stem
        out = Path(a.output) / name
        recipe = load_recipe(path, [f"output_dir={out}", f"train.max_minutes={a.minutes}", *a.overrides])
        summary = run_training(recipe)
        test = recipe.data.eval.path if recipe.data.eval else None
        metrics = evaluate_model(str(out), DataSpec(path=test), out / "eval") if test else {}
        config = json.loads((out / "config.json").read_text())
        from safetensors import safe_open

        with safe_open(str(out / "model.safetensors"), "pt") as f:
            params = sum(f.get_slice(k).get_shape().numel() if hasattr(f.get_slice(k).get_shape(), "numel")
                         else _numel(f.get_slice(k).get_shape()) for k in f.keys())
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        speeds = [r["audio_seconds_per_second"] for r in log if "audio_seconds_per_second" in r]
        rows.append({
            "recipe": name, "family": config.get("model_type"), "params_m": params / 1e6,
            "steps": summary["steps"], "train_minutes": summary["train_minutes"],
            "train_audio_s_per_s": sum(speeds[1:]) / max(len(speeds) - 1, 1) if len(speeds) > 1 else (speeds or [0])[0],
            "wer": metrics.get("wer"), "cer": metrics.get("cer"),
            "infer_audio_s_per_s": _throughput(out, test) if test else None,
        })
    lines = [
        f"Measured by `python scripts/compare_recipes.py {' '.join(a.recipes)} --minutes {a.minutes}` on "
        f"{cpu_name()}, {os.cpu_count()} CPUs visible, {time.strftime('%Y-%m-%d')}.",
        "",
        "| recipe | family | parameters | training minutes | steps | train audio-s/s | WER (held-out voices) | CER | inference audio-s/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wer = f"{r['wer'] * 100:.2f}%" if r["wer"] is not None else "-"
        cer = f"{r['cer'] * 100:.2f}%" if r["cer"] is not None else "-"
        inf = f"{r['infer_audio_s_per_s']:.0f}" if r["infer_audio_s_per_s"] else "-"
        lines.append(f"| {r['recipe']} | {r['family']} | {r['params_m']:.2f} M | {r['train_minutes']:.1f} | {r['steps']} | "
                     f"{r['train_audio_s_per_s']:.0f} | {wer} | {cer} | {inf} |")
    table = "\n".join(lines)
    print(table)
    Path(a.output).mkdir(parents=True, exist_ok=True)
    (Path(a.output) / "comparison.md").write_text(table + "\n")
    (Path(a.output) / "comparison.json").write_text(json.dumps(rows, indent=2))
    if a.readme:
        readme = Path(a.readme)
        text = readme.read_text() if readme.exists() else f"{START}\n{END}\n"
        if START not in text:
            text += f"\n{START}\n{END}\n"
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1] if END in rest else ""
        readme.write_text(f"{head}{START}\n{table}\n{END}{tail}")


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


if __name__ == "__main__":
    main()
