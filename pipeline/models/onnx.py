"""A CTC model as ONNX, and its forward pass on ONNX Runtime.

`export_onnx` writes `model.onnx` into a saved model directory, next to the weights it was exported from
(whose SHA-256 it records in `onnx_export.json`, written last), after checking ONNX Runtime's logits against
PyTorch's on a batch of other lengths than the traced one. `OnnxCTC` runs that file where `Transcriber`
runs a transformers model: same inputs, `.logits` out, so every decoder, chunking and timestamp path works
unchanged. On a CPU it is faster than PyTorch's eager forward (benchmarks/transcribe.py), and it is the
file to deploy where PyTorch is not wanted: inputs are the feature extractor's (`input_values` or
`input_features`) and `attention_mask`, the output is `logits`.

The TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`) is used: torch 2.14's dynamo exporter
stops at Parakeet's attention reshape with symbolic lengths, and the traced graph runs at any batch size
and length (every family checked in tests/test_onnx.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import ModelError
from pipeline.io import write_json

ONNX_FILE = "model.onnx"
EXPORT_INFO = "onnx_export.json"  # written last: its presence marks a complete export
WEIGHTS_FILE = "model.safetensors"
OPSET = 17
# A traced graph that drifts further than this from PyTorch is refused (float32 reorderings stay near 1e-5).
MAX_ABS_DIFF = 1e-3


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stat_key(path: Path) -> list[int]:
    """Size and modification time (ns) of a file: unchanged since it was hashed, it needs no new hash."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _runtime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ModelError("ONNX needs onnxruntime and onnx: pip install -e '.[onnx]'") from None
    return onnxruntime


class _Logits(torch.nn.Module):
    """(features, attention_mask) -> logits: the graph's signature, without transformers' output object."""

    def __init__(self, model: torch.nn.Module, input_name: str) -> None:
        super().__init__()
        self.model = model
        self.input_name = input_name

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(**{self.input_name: features, "attention_mask": attention_mask}).logits


def _example(feature_extractor: Any, seconds: tuple[float, ...], seed: int) -> dict[str, torch.Tensor]:
    """Features of quiet noise of these lengths, padded as `Transcriber` pads them."""
    from pipeline.evaluation.inference import featurize

    rng = np.random.default_rng(seed)
    sr = int(feature_extractor.sampling_rate)
    batch = featurize(feature_extractor, [(0.05 * rng.standard_normal(int(s * sr))).astype(np.float32) for s in seconds])
    batch.pop("frames_mask")
    return batch


def export_onnx(model_dir: str | Path, opset: int = OPSET) -> dict[str, Any]:
    """Export the CTC model saved in `model_dir` to `model_dir/model.onnx`, check it, and return what
    `onnx_export.json` records (input names, opset, the weights' SHA-256, the check's largest logit difference
    and the share of frames whose greedy label agrees)."""
    from pipeline.evaluation.evaluate import load_model_dir
    from pipeline.evaluation.inference import output_mask

    ort = _runtime()
    model_dir = Path(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"{model_dir}: no {WEIGHTS_FILE} (export a model directory this toolkit or "
                         f"save_pretrained wrote)")
    model, fe, _, _ = load_model_dir(str(model_dir), device="cpu")
    input_name = fe.model_input_names[0]
    graph = _Logits(model, input_name).eval()
    traced = _example(fe, (1.0, 1.5), seed=0)
    tmp = model_dir / ".onnx-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(
                graph, (traced[input_name], traced["attention_mask"]), str(tmp / ONNX_FILE), dynamo=False,
                input_names=[input_name, "attention_mask"], output_names=["logits"], opset_version=opset,
                dynamic_axes={input_name: {0: "batch", 1: "time"}, "attention_mask": {0: "batch", 1: "time"},
                              "logits": {0: "batch", 1: "frames"}},
            )
        # Lengths and a batch size the trace never saw: a graph that froze a shape fails here, not in use.
        check = _example(fe, (2.3, 0.7, 1.2), seed=1)
        session = ort.InferenceSession(str(tmp / ONNX_FILE), providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {input_name: check[input_name].numpy(),
                                       "attention_mask": check["attention_mask"].numpy()})[0]
        with torch.inference_mode():
            want = graph(check[input_name], check["attention_mask"]).numpy()
        if got.shape != want.shape:
            raise ModelError(f"{model_dir}: the exported graph gives logits of shape {got.shape}, PyTorch "
                             f"{want.shape}: this architecture does not export (open an issue)")
        frames = output_mask(model, check["attention_mask"], check["attention_mask"], want.shape[1]).numpy()
        diff = float(np.abs(got - want)[frames].max())
        if not diff <= MAX_ABS_DIFF:
            raise ModelError(f"{model_dir}: ONNX Runtime's logits differ from PyTorch's by up to {diff:.3g} "
                             f"(> {MAX_ABS_DIFF}): not written")
        info = {"file": ONNX_FILE, "inputs": [input_name, "attention_mask"], "outputs": ["logits"], "opset": opset,
                "model_type": model.config.model_type, "weights_sha256": sha256(weights),
                "weights_stat": stat_key(weights),
                "check": {"seconds": [2.3, 0.7, 1.2], "max_abs_diff": diff,
                          "greedy_agreement": float((got.argmax(-1) == want.argmax(-1))[frames].mean())},
                "torch": torch.__version__, "onnxruntime": ort.__version__}
        del session
        one_data_file(tmp / ONNX_FILE)
        (model_dir / EXPORT_INFO).unlink(missing_ok=True)  # an older export's record must not vouch for this graph
        for path in sorted(tmp.iterdir()):
            os.replace(path, model_dir / path.name)
        write_json(model_dir / EXPORT_INFO, info)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def one_data_file(graph: Path) -> None:
    """Over 2 GB (protobuf's limit) the exporter writes each weight to a file of its own next to the graph:
    gather them into one, `model.onnx.data`, so that a model directory gains two files, not hundreds."""
    import onnx

    others = [p for p in graph.parent.iterdir() if p != graph]
    if not others:
        return
    model = onnx.load(str(graph), load_external_data=True)
    for path in others:
        path.unlink()
    onnx.save_model(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=graph.name + ".data", size_threshold=1024)


class OnnxCTC(torch.nn.Module):
    """`model_dir/model.onnx` on ONNX Runtime (CPU), in place of the PyTorch model it was exported from.

    `reference` (that model, loaded) lends its config and the methods that map attention masks to output
    frames, which read only the config. One session per torch thread count: `Transcriber` runs batches on
    several threads, each on its share of the threads, and ONNX Runtime fixes a session's threads when it is
    created (its `run` is thread-safe).
    """

    def __init__(self, model_dir: str | Path, reference: torch.nn.Module) -> None:
        super().__init__()
        self._ort = _runtime()
        model_dir = Path(model_dir)
        info_path = model_dir / EXPORT_INFO
        if not info_path.is_file() or not (model_dir / ONNX_FILE).is_file():
            raise ModelError(f"{model_dir}: no ONNX export; run: python scripts/export_onnx.py --model {model_dir}")
        info = json.loads(info_path.read_text(encoding="utf-8"))
        weights = model_dir / WEIGHTS_FILE
        # hashing gigabytes at every load is slow: only when the file is not the one exported (copied, or rewritten)
        if weights.is_file() and stat_key(weights) != info.get("weights_stat") \
                and sha256(weights) != info.get("weights_sha256"):
            raise ModelError(f"{model_dir}: {ONNX_FILE} was exported from other weights than {WEIGHTS_FILE} "
                             f"(retrained since?); export again: python scripts/export_onnx.py --model {model_dir}")
        self.path = str(model_dir / ONNX_FILE)
        self.input_name = info["inputs"][0]
        self.config = reference.config
        for helper in ("_get_output_attention_mask", "_get_feat_extract_output_lengths"):
            if hasattr(reference, helper):
                setattr(self, helper, getattr(reference, helper))
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    def session(self) -> Any:
        threads = torch.get_num_threads()
        with self._lock:
            if threads not in self._sessions:
                options = self._ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                self._sessions[threads] = self._ort.InferenceSession(self.path, options,
                                                                     providers=["CPUExecutionProvider"])
            return self._sessions[threads]

    def forward(self, **inputs: torch.Tensor) -> Any:
        from transformers.modeling_outputs import CausalLMOutput

        feed = {self.input_name: inputs[self.input_name].cpu().numpy(),
                "attention_mask": inputs["attention_mask"].cpu().numpy().astype(np.int64)}
        return CausalLMOutput(logits=torch.from_numpy(self.session().run(["logits"], feed)[0]))
