#!/usr/bin/env python
"""Train from a recipe: `python scripts/train.py RECIPE.yaml [key=value ...]`.

Also runs unchanged under `accelerate launch` and `torchrun --nproc_per_node N`.
Example: python scripts/train.py recipes/asr/quickstart.yaml train.max_steps=200 output_dir=runs/try
"""

from __future__ import annotations

import argparse

from pipeline.cli import entry_point, setup_logging
from pipeline.config import load_recipe
from pipeline.training.loop import run_training


@entry_point
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.learning_rate=3e-4")
    args = parser.parse_args()
    setup_logging()
    recipe = load_recipe(args.recipe, args.overrides)
    summary = run_training(recipe)
    if summary is not None:
        shown = {k: v for k, v in summary.items() if not isinstance(v, dict)}
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))


if __name__ == "__main__":
    main()
