#!/usr/bin/env python
"""Does self-supervised pretraining help when labels are scarce? One command, one table.

1. Pretrain wav2vec 2.0 on unlabelled audio (task ssl, `--ssl-recipe`), and write the same
   architecture freshly initialised (`train.max_steps=0`): the random-init baseline.
2. Draw nested labelled subsets of `--labelled` (e.g. 5 min in 20 min in all; `Nutt` = N utterances).
3. Fine-tune each init on each subset with CTC (`--asr-recipe`, `model.name_or_path=<init>`), with the
   same budget (`--finetune-steps` optimizer steps) for every run.
4. Score WER on `--eval` (held-out voices for data/synth/test) and write the markdown table, with the
   unlabelled hours and the CPU minutes of every stage, between the markers in `--readme`.

Finished runs (their train_results.json exists) are reused, so an interrupted experiment continues
where it stopped (`--force` redoes them). Every run is a plain `scripts/train.py` call; its command
line is in `<output>/commands.txt`.

  python scripts/low_resource.py                        # the full experiment (hours on 2 CPU cores)
  python scripts/low_resource.py --smoke                # minutes: checks the pipeline end to end, no result
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.cli import entry_point, setup_logging
from pipeline.config import DataSpec
from pipeline.errors import RecipeError

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- low_resource:start -->", "<!-- low_resource:end -->"
INITS = ("random", "ssl")


def parse_subset(text: str) -> tuple[str, float | int | None]:
    """'5min' -> seconds budget 300; '60utt' -> 60 utterances; 'all' -> everything."""
    text = text.strip().lower()
    if text == "all":
        return "all", None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(min|h|utt)", text)
    if not m:
        raise RecipeError(f"--subsets: {text!r} is not NNmin, NNh, NNutt or all")
    value, unit = float(m.group(1)), m.group(2)
    if unit == "utt":
        return text, int(value)
    return text, value * (60 if unit == "min" else 3600)


def labelled_rows(spec: str, seed: int) -> list[dict[str, Any]]:
    """The labelled pool in a fixed random order (nested subsets are prefixes of it)."""
    from pipeline.audio import probe
    from pipeline.data.sources import load_spec

    table = load_spec(DataSpec(path=spec))
    rows = []
    for r in table:
        if r["problem"] or not r["text"].strip():
            continue
        rows.append({"file_name": r["audio"], "text": r["text"], "speaker": r["speaker"],
                     "duration": probe(r["audio"], decode=False).duration})
    random.Random(seed).shuffle(rows)
    return rows


def make_subset(rows: list[dict[str, Any]], budget: float | int | None, path: Path) -> dict[str, Any]:
    if budget is None:
        chosen = rows
    elif isinstance(budget, int):
        chosen = rows[:budget]
    else:
        chosen, total = [], 0.0
        for r in rows:
            if total >= budget:
                break
            chosen.append(r)
            total += r["duration"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["file_name", "text", "speaker"])
        w.writeheader()
        for r in chosen:
            w.writerow({k: r[k] for k in ("file_name", "text", "speaker")})
    return {"utterances": len(chosen), "minutes": sum(r["duration"] for r in chosen) / 60,
            "speakers": sorted({r["speaker"] for r in chosen})}


def gumbel_decay(recipe: str, steps: int, share: float) -> float:
    """The per-step decay that takes the recipe's max Gumbel temperature to its min at `share` of `steps`."""
    from pipeline.config import load_recipe

    s = load_recipe(REPO / recipe if not Path(recipe).is_absolute() else recipe).ssl
    return round((s.min_gumbel_temperature / s.max_gumbel_temperature) ** (1 / max(share * steps, 1)), 8)


class Runner:
    """Runs scripts/train.py once per stage; measures the CPU time of each child process."""

    def __init__(self, out: Path, threads: int | None, force: bool) -> None:
        self.out, self.threads, self.force = out, threads, force
        self.log = out / "commands.txt"

    def train(self, name: str, recipe: str, overrides: list[str]) -> dict[str, Any]:
        run_dir = self.out / name
        results = run_dir / "train_results.json"
        stamp = run_dir / "cpu_minutes.json"
        if results.is_file() and stamp.is_file() and not self.force:
            print(f"[{name}] reusing {run_dir}", flush=True)
            return {**json.loads(results.read_text()), **json.loads(stamp.read_text())}
        if self.force and run_dir.exists():
            shutil.rmtree(run_dir)
        # train.resume: an interrupted run continues from its last checkpoint (none yet: from scratch)
        args = [sys.executable, str(REPO / "scripts" / "train.py"), recipe, f"output_dir={run_dir}", "train.resume=true",
                *overrides]
        if self.threads:
            args.append(f"train.threads={self.threads}")
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(" ".join(args[1:]) + "\n")
        print(f"[{name}] {' '.join(args[2:])}", flush=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        proc = subprocess.run(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "stdout.txt").write_text(proc.stdout, encoding="utf-8")
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-15:])
            raise RecipeError(f"[{name}] scripts/train.py failed ({proc.returncode}); see {run_dir / 'stdout.txt'}:\n{tail}")
        cpu = {"cpu_minutes": round(((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / 60, 2),
               "wall_minutes": round(wall / 60, 2)}
        stamp.write_text(json.dumps(cpu), encoding="utf-8")
        return {**json.loads(results.read_text()), **cpu}


def _fmt(x: Any, spec: str = ".1f") -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def render(summary: dict[str, Any]) -> str:
    s = summary
    lines = []
    if s["smoke"]:
        lines += ["**Smoke run, not a result**: it only shows that the command runs end to end "
                  f"({s['ssl']['steps']} pretraining steps, {s['finetune_steps']} fine-tuning steps, "
                  f"{s['eval_utterances']} evaluation utterances).", ""]
    lines += [
        f"Unlabelled audio: `{s['unlabelled']}`, {s['unlabelled_hours']:.2f} h; pretraining (`{s['ssl_recipe']}`, "
        f"Gumbel decay {s['gumbel_decay']}): {s['ssl']['steps']} steps, "
        f"{_fmt(s['ssl']['cpu_minutes'])} CPU min ({_fmt(s['ssl']['wall_minutes'])} min wall), final validation contrastive "
        f"accuracy {_fmt(s['ssl'].get('eval_accuracy'), '.3f')} (random init: {_fmt(s['random'].get('eval_accuracy'), '.3f')}), "
        f"code perplexity {_fmt(s['ssl'].get('eval_code_perplexity'))}.",
        f"Fine-tuning: `{s['asr_recipe']}`, {s['finetune_steps']} steps for every run; WER (%) on `{s['eval']}` "
        f"({s['eval_utterances']} utterances, voices absent from the labelled data: {s['held_out_voices']}).", "",
        "| labelled | utterances | WER random init | WER SSL init | relative change | CER random init | CER SSL init "
        "| relative change | CPU min (random / SSL) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def pair(row: dict[str, Any], key: str) -> str:
        r, p = (100 * x if isinstance(x, float) else None for x in (row["random"].get(key), row["ssl"].get(key)))
        rel = f"{100 * (p - r) / r:+.1f} %" if isinstance(r, float) and isinstance(p, float) and r > 0 else "-"
        return f"{_fmt(r)} | {_fmt(p)} | {rel}"

    for row in s["rows"]:
        lines.append(f"| {row['subset']} ({row['minutes']:.1f} min) | {row['utterances']} | {pair(row, 'eval_wer')} | "
                     f"{pair(row, 'eval_cer')} | {_fmt(row['random'].get('cpu_minutes'))} / "
                     f"{_fmt(row['ssl'].get('cpu_minutes'))} |")
    lines += ["", f"Total: {s['total_cpu_minutes']:.1f} CPU minutes on {s['machine']} ({s['date']}). Command: "
              f"`{s['command']}`."]
    return "\n".join(lines)


def write_readme(path: Path, table: str) -> None:
    text = path.read_text(encoding="utf-8") if path.is_file() else f"{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--unlabelled", default="data/synth/train", help="audio for pretraining (transcripts ignored)")
    p.add_argument("--labelled", default="data/synth/train", help="labelled pool the subsets are drawn from")
    p.add_argument("--eval", default="data/synth/test", help="labelled test set (held-out voices)")
    p.add_argument("--subsets", default="5min,20min,all", help="comma-separated: NNmin, NNh, NNutt or all")
    p.add_argument("--ssl-recipe", default="recipes/ssl/quickstart.yaml")
    p.add_argument("--ssl-steps", type=int, default=1000, help="pretraining optimizer steps (~8 s each on 2 threads)")
    p.add_argument("--gumbel-min-at", type=float, default=0.7,
                   help="share of --ssl-steps at which the Gumbel temperature reaches its minimum (sets the decay)")
    p.add_argument("--ssl-set", action="append", default=[], help="extra KEY=VALUE for the pretraining run")
    p.add_argument("--asr-recipe", default="recipes/asr/wav2vec2_quickstart.yaml")
    p.add_argument("--finetune-steps", type=int, default=1000, help="optimizer steps of every fine-tuning run")
    p.add_argument("--asr-set", action="append", default=[], help="extra KEY=VALUE for every fine-tuning run")
    p.add_argument("--freeze-feature-encoder", choices=("auto", "yes", "no"), default="auto",
                   help="auto: frozen for the SSL init (as in the paper), trained for the random init")
    p.add_argument("--eval-limit", type=int, default=None, help="score only the first N eval utterances")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: all cores)")
    p.add_argument("--output", default="runs/low_resource")
    p.add_argument("--readme", default="recipes/ssl/README.md")
    p.add_argument("--force", action="store_true", help="redo finished runs")
    p.add_argument("--smoke", action="store_true",
                   help="tiny end-to-end check: subsets 20utt,60utt, 3 pretraining and 3 fine-tuning steps, 40 eval "
                        "utterances; the table is marked as a smoke run")
    a = p.parse_args()
    setup_logging()
    if a.smoke:
        a.subsets = "20utt,60utt" if a.subsets == p.get_default("subsets") else a.subsets
        a.finetune_steps = 3 if a.finetune_steps == p.get_default("finetune_steps") else a.finetune_steps
        a.eval_limit = a.eval_limit or 40
        a.ssl_steps = 3 if a.ssl_steps == p.get_default("ssl_steps") else a.ssl_steps
        a.ssl_set = ["train.batch_seconds=30", *a.ssl_set]
        a.asr_set = ["train.batch_seconds=30", *a.asr_set]
        if a.output == p.get_default("output"):
            a.output = "runs/low_resource_smoke"
    out = (REPO / a.output).resolve() if not Path(a.output).is_absolute() else Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(out, a.threads, a.force)
    eval_spec = [f"data.eval={a.eval}"] + ([f"data.eval.limit={a.eval_limit}"] if a.eval_limit else [])

    # 1. pretraining and the random init of the same architecture (same seed: the SSL run's start)
    common_ssl = [f"data.train={a.unlabelled}", *eval_spec, f"seed={a.seed}"]
    decay = gumbel_decay(a.ssl_recipe, a.ssl_steps, a.gumbel_min_at)
    ssl = runner.train("pretrain_ssl", a.ssl_recipe, [
        *common_ssl, f"train.max_steps={a.ssl_steps}", "train.max_minutes=null", f"ssl.gumbel_temperature_decay={decay}",
        f"train.eval_every={max(a.ssl_steps // 3, 1)}", f"train.save_every={max(a.ssl_steps // 6, 1)}", *a.ssl_set])
    init = runner.train("pretrain_random_init", a.ssl_recipe, [*common_ssl, *a.ssl_set, "train.max_steps=0"])
    meta = json.loads((out / "pretrain_ssl" / "speech_pipeline.json").read_text())

    # 2-3. nested labelled subsets x {random, ssl}
    pool = labelled_rows(a.labelled, a.seed)
    from pipeline.data.sources import load_spec

    eval_table = load_spec(DataSpec(path=a.eval, limit=a.eval_limit))
    eval_speakers = {s for s in eval_table["speaker"] if s}
    rows, train_speakers = [], set()
    for text in a.subsets.split(","):
        name, budget = parse_subset(text)
        info = make_subset(pool, budget, out / "subsets" / f"{name}.csv")
        train_speakers.update(info["speakers"])
        row = {"subset": name, "utterances": info["utterances"], "minutes": info["minutes"]}
        for kind in INITS:
            init_dir = out / ("pretrain_ssl" if kind == "ssl" else "pretrain_random_init")
            freeze = {"auto": kind == "ssl", "yes": True, "no": False}[a.freeze_feature_encoder]
            overrides = [f"model.name_or_path={init_dir}", f"data.train={out / 'subsets' / f'{name}.csv'}", *eval_spec,
                         f"seed={a.seed}", f"model.freeze_feature_encoder={str(freeze).lower()}",
                         f"train.max_steps={a.finetune_steps}", "train.max_minutes=null",
                         f"train.eval_every={a.finetune_steps}", f"train.save_every={a.finetune_steps}", *a.asr_set]
            row[kind] = runner.train(f"finetune_{name}_{kind}", a.asr_recipe, overrides)
        rows.append(row)
        print(f"[{name}] WER random {row['random'].get('eval_wer')} / SSL {row['ssl'].get('eval_wer')}", flush=True)

    overlap = eval_speakers & train_speakers
    summary = {
        "smoke": a.smoke, "unlabelled": a.unlabelled, "unlabelled_hours": meta.get("unlabelled_hours", 0.0),
        "ssl": ssl, "random": init, "ssl_recipe": a.ssl_recipe, "gumbel_decay": decay, "finetune_steps": a.finetune_steps, "asr_recipe": a.asr_recipe, "eval": a.eval,
        "eval_utterances": len(eval_table), "rows": rows,
        "held_out_voices": "yes" if eval_speakers and not overlap else (f"no, {len(overlap)} shared" if overlap else "unknown"),
        "total_cpu_minutes": sum(r.get("cpu_minutes", 0.0) for r in [ssl, init] + [row[k] for row in rows for k in INITS]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "date": time.strftime("%Y-%m-%d"),
        "command": "python scripts/low_resource.py " + " ".join(sys.argv[1:]),
    }
    (out / "low_resource.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    table = render(summary)
    print(table)
    if a.readme:
        write_readme(REPO / a.readme if not Path(a.readme).is_absolute() else Path(a.readme), table)
        print(f"table written to {a.readme}")


if __name__ == "__main__":
    main()
