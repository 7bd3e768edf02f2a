"""The loop's optimizers: AdamW, or Muon on the hidden weight matrices with AdamW on the rest.

Muon (Jordan et al., 2024; torch.optim.Muon) orthogonalises each weight matrix's momentum before the
update, which trains transformers in fewer steps than AdamW. It is defined for 2-D matrices only, and
its authors keep embeddings, output layers, biases and norms on AdamW: `MuonWithAdamW` runs both as
one optimizer, so the loop's one LR scheduler, gradient clipping and checkpoints see a single object.
Convolution kernels can join as the matrices they are flattened to (out channels × in channels · taps),
as Jordan's CIFAR-10 speedruns use it: FastSpeech2Conformer's feed-forward blocks are convolutions.

`Muon` is torch's, with the Newton-Schulz iteration in a chosen precision: torch always runs it in
bfloat16, which CPUs without bfloat16 matrix units emulate (on 2 cores of an AVX2 EPYC a 384 x 1536
iteration took 418 ms in bfloat16 against 7.5 ms in float32), so a run there would spend its time in it.
And ours stacks the matrices of one shape into one batched iteration where torch's takes them one at a time:
the ASR quickstart's optimizer step 2.1x faster on 2 CPU cores (benchmarks/optimizers.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pipeline.config import TrainConfig
from pipeline.machine import cpu_has_bfloat16_units

# Output layers stay on AdamW (Muon's authors' advice): CTC heads of the model families, SSL projections,
# FastSpeech2Conformer's mel projection.
_OUTPUT_LAYERS = ("lm_head", "ctc_head", "project_q", "project_hid", "quantizer", "feat_out")


def muon_matrices(model: torch.nn.Module, convolutions: bool = False) -> list[torch.nn.Parameter]:
    """The weights Muon updates, in module order: hidden `nn.Linear` layers, and with `convolutions` the
    kernels of ungrouped convolutions (depthwise ones are per-channel filters, not matrices)."""
    kinds: tuple[type, ...] = (torch.nn.Linear,) + ((torch.nn.Conv1d, torch.nn.Conv2d) if convolutions else ())
    found: dict[int, torch.nn.Parameter] = {}
    for name, module in model.named_modules():
        if not isinstance(module, kinds) or any(part in _OUTPUT_LAYERS for part in name.split(".")):
            continue
        w = module.weight
        flat_ok = w.ndim == 2 or (getattr(module, "groups", 1) == 1 and w.is_contiguous())
        if flat_ok and w.requires_grad and w.shape[0] > 1 and w[0].numel() > 1:
            found.setdefault(id(w), w)
    return list(found.values())


def orthogonalize(update: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype) -> torch.Tensor:
    """Muon's quintic Newton-Schulz iteration (torch.optim.Muon's, in `dtype`): ~U S' V^T of update = U S V^T,
    S' between about 0.5 and 1.5."""
    x = update.to(dtype)
    wide = x.size(0) <= x.size(1)
    x = x if wide else x.T  # iterate on the smaller Gram matrix
    x = x / x.norm().clamp(min=eps)
    a, b, c = coefficients
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x if wide else x.T


def orthogonalize_all(updates: list[torch.Tensor], coefficients: tuple[float, float, float], steps: int, eps: float,
                     dtype: torch.dtype) -> list[torch.Tensor]:
    """`orthogonalize` of each update, the matrices of one shape (up to transposition) stacked into one batched
    iteration: the same products, but a few large batched ones instead of one small product per matrix
    (on 2 CPU cores the ASR quickstart's 55 matrices take 22 instead of 53 ms in bfloat16)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, u in enumerate(updates):
        groups.setdefault((min(u.shape), max(u.shape)), []).append(i)
    out: list[torch.Tensor] = [updates[0]] * len(updates)
    a, b, c = coefficients
    for idx in groups.values():
        x = torch.stack([updates[i].to(dtype) if updates[i].size(0) <= updates[i].size(1) else updates[i].T.to(dtype)
                         for i in idx])  # each in its wide form: the smaller Gram matrix
        x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=eps)
        for _ in range(steps):
            gram = torch.bmm(x, x.transpose(1, 2))
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        for j, i in enumerate(idx):
            out[i] = x[j] if updates[i].size(0) <= updates[i].size(1) else x[j].T
    return out


def ns_dtype(precision: str, device: torch.device) -> torch.dtype:
    """`train.muon_precision` -> the dtype of the iteration on `device`. auto: bfloat16 (torch's choice) on
    GPUs and on CPUs with bfloat16 units, float32 on other CPUs."""
    if precision == "auto":
        return torch.float32 if device.type == "cpu" and not cpu_has_bfloat16_units() else torch.bfloat16
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[precision]


class Muon(torch.optim.Muon):
    """torch.optim.Muon (same update, state and checkpoints) with the iteration's precision chosen by
    `precision` ("auto", "float32", "bfloat16"; torch's own is "bfloat16" everywhere)."""

    def __init__(self, params: Any, precision: str = "auto", **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.precision = precision

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = float(group["lr"]), group["momentum"]
            by_device: dict[torch.device, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_device.setdefault(p.device, []).append(p)
            for device, params in by_device.items():  # whole-list (foreach) kernels: no per-matrix Python cost
                grads = [p.grad for p in params]
                bufs = []
                for p in params:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                    bufs.append(state["momentum_buffer"])
                torch._foreach_lerp_(bufs, grads, 1 - momentum)
                updates = torch._foreach_lerp(grads, bufs, momentum) if group["nesterov"] else bufs
                updates = orthogonalize_all(updates, group["ns_coefficients"], group["ns_steps"], group["eps"],
                                            ns_dtype(self.precision, device))
                if group["weight_decay"]:
                    torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
                for p, update in zip(params, updates, strict=True):  # torch's arithmetic, to the last bit
                    p.add_(update, alpha=-lr * _lr_ratio(group["adjust_lr_fn"], p.shape))
        return loss


def _lr_ratio(adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's learning-rate adjustment for a (fan-out, fan-in) matrix."""
    out, fan_in = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":  # Moonshot's: the update's RMS matches AdamW's
        return 0.2 * math.sqrt(max(out, fan_in))
    if adjust_lr_fn == "spectral_unclamped":
        return math.sqrt(out / fan_in)
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1, out / fan_in))
    return 1.0


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for `matrices`, AdamW for every other parameter, behind one Optimizer interface.

    The param groups are the two inner optimizers' own dicts, so an LR scheduler that sets `lr` on
    this optimizer's groups sets it on theirs. Muon's step is scaled to AdamW's update size
    (`adjust_lr_fn="match_rms_adamw"`, Moonshot's rule), so one learning rate serves both.
    """

    def __init__(self, matrices: list[torch.nn.Parameter], adamw_groups: list[dict[str, Any]], lr: float,
                 weight_decay: float, momentum: float, ns_steps: int = 5, precision: str = "auto",
                 **adamw_kwargs: Any) -> None:
        # torch's Muon takes 2-D parameters only: a convolution kernel goes in as a 2-D parameter on the
        # kernel's own storage (re-pointed before each use: moving the model to a device replaces storage)
        self._flat = [(torch.nn.Parameter(p.detach().flatten(1)), p) for p in matrices if p.ndim > 2]
        flat = iter(view for view, _ in self._flat)
        on_muon = [next(flat) if p.ndim > 2 else p for p in matrices]
        self.muon = Muon(on_muon, precision=precision, lr=lr, weight_decay=weight_decay, momentum=momentum,
                         nesterov=True, ns_steps=ns_steps, adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(adamw_groups, lr=lr, **adamw_kwargs)
        super().__init__([*self.muon.param_groups, *self.adamw.param_groups], {})  # the same dicts, not copies

    def _point_views(self, with_grads: bool) -> None:
        for view, p in self._flat:
            view.data = p.data.view(view.shape)  # a contiguous kernel: a view, so Muon updates it in place
            view.grad = p.grad.reshape(view.shape) if with_grads and p.grad is not None else None

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        self._point_views(with_grads=True)
        loss = self.muon.step(closure)
        self._point_views(with_grads=False)
        self.adamw.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)
        for _, kernel in self._flat:  # the kernels themselves are in neither inner optimizer
            if kernel.grad is not None:
                if set_to_none:
                    kernel.grad = None
                else:
                    kernel.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._point_views(with_grads=False)  # the state is moved to the device of the parameters it belongs to
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        # loading replaces the inner optimizers' group dicts: share the new ones
        self.param_groups = [*self.muon.param_groups, *self.adamw.param_groups]


def choose_optimizer(name: str, device: torch.device, sharded: bool = False) -> str:
    """`train.optimizer` -> "adamw" or "muon". auto: Muon where its Newton-Schulz iteration runs on fast bfloat16
    products (GPUs, CPUs with bfloat16 units), AdamW on other CPUs and for sharded (FSDP/DeepSpeed) parameters.

    Why: on 2 AVX2 cores Muon's float32 iteration costs the TTS quickstart a quarter of its steps and lost to
    AdamW at equal minutes with both seeds measured; where bfloat16 is fast it won with both (recipes/tts/README.md).
    """
    if name != "auto":
        return name
    if sharded or (device.type == "cpu" and not cpu_has_bfloat16_units()):
        return "adamw"
    return "muon"


def build_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    """`train.optimizer`: AdamW over everything, or Muon on the hidden matrices with AdamW on the rest
    ("auto" is chosen for the device of the model's parameters, see `choose_optimizer`).

    Weight decay applies to matrices and convolution kernels, not to biases and norms.
    """
    first = next(model.parameters(), None)
    name = choose_optimizer(t.optimizer, first.device if first is not None else torch.device("cpu"))
    matrices = muon_matrices(model, t.muon_convolutions) if name == "muon" else []
    on_muon = {id(p) for p in matrices}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in on_muon:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel (CPU and CUDA) updates every tensor in one pass: a quickstart step on 2 CPU cores
    # takes 117 instead of 135 ms with it. transformers' Trainer uses it by default too.
    params = decay + no_decay
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    adamw = {"betas": (0.9, t.adam_beta2), "eps": 1e-8, "fused": fused or None}
    if not matrices:
        return torch.optim.AdamW(groups, lr=t.learning_rate, **adamw)
    return MuonWithAdamW(matrices, groups, lr=t.learning_rate, weight_decay=t.weight_decay, momentum=t.muon_momentum,
                         ns_steps=t.muon_ns_steps, precision=t.muon_precision, **adamw)
