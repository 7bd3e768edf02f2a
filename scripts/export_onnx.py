#!/usr/bin/env python
"""Export a CTC model directory to ONNX: writes MODEL/model.onnx and MODEL/onnx_export.json.

The export is checked before it is written: ONNX Runtime's logits against PyTorch's on a batch of lengths the
trace did not see. Then transcribe and evaluate on ONNX Runtime (CPU) with --runtime onnx:

  python scripts/export_onnx.py --model runs/quickstart
  python scripts/transcribe.py --model runs/quickstart --runtime onnx audio.wav
  python scripts/evaluate.py --model runs/quickstart --runtime onnx --data data/synth/test --output runs/quickstart/eval_onnx

The graph's inputs are the feature extractor's (input_values or input_features) and attention_mask, its output
logits (batch, frames, vocabulary); any batch size and length. Needs: pip install -e '.[onnx]'.
"""

from __future__ import annotations

import argparse
import json

from pipeline.cli import entry_point, setup_logging
from pipeline.models.onnx import OPSET, export_onnx


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a model directory (written by scripts/train.py or save_pretrained)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    a = p.parse_args()
    setup_logging()
    print(json.dumps(export_onnx(a.model, opset=a.opset)))


if __name__ == "__main__":
    main()
