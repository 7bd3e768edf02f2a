"""train.optimizer: Muon on the hidden matrices with AdamW on the rest, as one optimizer of the loop."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import run_python
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC, get_scheduler

from pipeline.config import TrainConfig
from pipeline.machine import cpu_has_bfloat16_units
from pipeline.training.optimizers import (
    MuonWithAdamW,
    build_optimizer,
    choose_optimizer,
    muon_matrices,
    ns_dtype,
    orthogonalize,
    orthogonalize_all,
)

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "recipes" / "asr" / "conformer_quickstart.yaml")


def tiny_wav2vec2() -> Wav2Vec2ForCTC:
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(vocab_size=12, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                         conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                         num_conv_pos_embedding_groups=2)
    return Wav2Vec2ForCTC(cfg).eval()  # no dropout or masking: the same forward for every copy


def train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, seeds: range) -> None:
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 1600, generator=g)
        labels = torch.randint(1, 12, (2, 5), generator=g)
        model(x, labels=labels).loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def test_muon_takes_the_hidden_linear_weights_only() -> None:
    model = tiny_wav2vec2()
    names = {id(p): n for n, p in model.named_parameters()}
    chosen = {names[id(p)] for p in muon_matrices(model)}
    assert "wav2vec2.encoder.layers.0.attention.q_proj.weight" in chosen
    assert "wav2vec2.encoder.layers.1.feed_forward.output_dense.weight" in chosen
    assert "wav2vec2.feature_projection.projection.weight" in chosen
    assert not any(n.startswith("lm_head") for n in chosen)  # the output layer stays on AdamW
    assert all(n.endswith(".weight") and "norm" not in n and "conv" not in n for n in chosen)
    optimizer = build_optimizer(model, TrainConfig(optimizer="muon", learning_rate=1e-3, weight_decay=0.01))
    assert isinstance(optimizer, MuonWithAdamW)
    on_adamw = {id(p) for g in optimizer.adamw.param_groups for p in g["params"]}
    on_muon = {id(p) for g in optimizer.muon.param_groups for p in g["params"]}
    assert not on_adamw & on_muon
    assert on_adamw | on_muon == {id(p) for p in model.parameters()}  # every parameter is trained, once
    assert isinstance(build_optimizer(model, TrainConfig()), torch.optim.AdamW)


def test_one_step_equals_torch_muon_and_adamw_side_by_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """The combination adds nothing to the two optimizers' updates, and the scheduler's LR reaches both.
    (In bfloat16, torch's precision; float32 is the only difference on CPUs, tested below. Ours stacks the
    matrices of a shape into one batched iteration, whose bfloat16 rounding differs from one product per
    matrix: here it iterates matrix by matrix as torch does, and the batching is tested on its own below.)"""
    monkeypatch.setattr("pipeline.training.optimizers.orthogonalize_all",
                        lambda updates, *args: [orthogonalize(u, *args) for u in updates])
    a, b = tiny_wav2vec2(), tiny_wav2vec2()
    t = TrainConfig(optimizer="muon", learning_rate=2e-3, weight_decay=0.01, warmup_steps=2, lr_schedule="linear",
                    muon_precision="bfloat16")
    combined = build_optimizer(a, t)
    sched = get_scheduler("linear", combined, num_warmup_steps=2, num_training_steps=6)

    mats = muon_matrices(b)
    rest = [p for p in b.parameters() if all(p is not m for m in mats)]
    muon = torch.optim.Muon(mats, lr=2e-3, weight_decay=0.01, momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw")
    decay = [p for n, p in b.named_parameters() if any(p is q for q in rest) and p.ndim >= 2 and "norm" not in n]
    no_decay = [p for p in rest if all(p is not q for q in decay)]
    adamw = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                              lr=2e-3, betas=(0.9, 0.98), eps=1e-8, fused=True)
    scheds = [get_scheduler("linear", o, num_warmup_steps=2, num_training_steps=6) for o in (muon, adamw)]

    for seed in range(4):
        train_steps(a, combined, sched, range(seed, seed + 1))
        g = torch.Generator().manual_seed(seed)
        x, labels = torch.randn(2, 1600, generator=g), torch.randint(1, 12, (2, 5), generator=g)
        b(x, labels=labels).loss.backward()
        muon.step()
        adamw.step()
        for s in scheds:
            s.step()
        muon.zero_grad(set_to_none=True)
        adamw.zero_grad(set_to_none=True)
        assert {g["lr"] for g in combined.muon.param_groups} == {g["lr"] for g in muon.param_groups}
        for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7, msg=name)
    assert combined.muon.param_groups[0]["lr"] == pytest.approx(2e-3 * 2 / 4)  # warm-up, then linear decay: step 4 of 6


def test_batched_iteration_is_each_matrix_own() -> None:
    """Matrices of one shape, up to transposition, share one batched Newton-Schulz iteration: each comes back
    in its own place and orientation, as the matrix-by-matrix iteration gives it."""
    g = torch.Generator().manual_seed(0)
    shapes = [(6, 10), (10, 6), (6, 6), (6, 10), (3, 7), (6, 6), (10, 6)]
    updates = [torch.randn(*s, generator=g, dtype=torch.float64) * (i + 1) for i, s in enumerate(shapes)]
    coefficients = (3.4445, -4.7750, 2.0315)
    together = orthogonalize_all(updates, coefficients, 5, 1e-7, torch.float64)
    assert [tuple(x.shape) for x in together] == shapes
    for u, x in zip(updates, together, strict=True):
        torch.testing.assert_close(x, orthogonalize(u, coefficients, 5, 1e-7, torch.float64), rtol=1e-12, atol=1e-12)
    halved = orthogonalize_all([u.float() for u in updates], coefficients, 5, 1e-7, torch.bfloat16)
    assert all(x.dtype == torch.bfloat16 for x in halved)
    assert max((x.double() - y).abs().max().item() for x, y in zip(halved, together, strict=True)) < 0.05


def test_newton_schulz_precision_follows_the_hardware(tmp_path: Path) -> None:
    """torch's Muon iterates in bfloat16, which CPUs without bfloat16 units emulate at a fraction of float32's
    speed (benchmarks/optimizers.py): ours runs float32 there, and is the same iteration."""
    for i, (flags, units) in enumerate((("fpu sse avx avx2 fma", False), ("avx512f avx512_bf16", True),
                                        ("avx2 amx_bf16 amx_tile", True))):
        (tmp_path / f"cpuinfo{i}").write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: amx_bf16\n")
        assert cpu_has_bfloat16_units(str(tmp_path / f"cpuinfo{i}")) is units, flags  # the first processor's flags
    assert cpu_has_bfloat16_units(str(tmp_path / "absent")) is False
    assert ns_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if cpu_has_bfloat16_units() else torch.float32)
    assert ns_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert ns_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    g = torch.randn(24, 40, generator=torch.Generator().manual_seed(0))
    coefficients = (3.4445, -4.7750, 2.0315)
    exact = orthogonalize(g.double(), coefficients, 5, 1e-7, torch.float64)
    ours = orthogonalize(g, coefficients, 5, 1e-7, torch.float32)
    halved = orthogonalize(g, coefficients, 5, 1e-7, torch.bfloat16)
    assert ours.dtype == torch.float32 and halved.dtype == torch.bfloat16
    err32, err16 = (ours.double() - exact).abs().max(), (halved.double() - exact).abs().max()
    assert err32 < 1e-5 < 1e-3 < err16  # float32: the iteration itself; bfloat16: within its 3 digits
    # tall matrices iterate on the transpose, and the result is an approximate orthogonalisation: singular
    # values pulled from a wide spread into about [0.5, 1.5]
    tall = orthogonalize(g.T, coefficients, 5, 1e-7, torch.float32)
    torch.testing.assert_close(tall, ours.T)
    s = torch.linalg.svdvals(ours)
    assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 5 and 0.5 < s.min() and s.max() < 1.5

    # in the optimizer: the precision asked for is the one used
    model = tiny_wav2vec2()
    runs = {}
    for precision in ("auto", "float32", "bfloat16"):  # auto: one of the other two
        m = copy.deepcopy(model)
        opt = build_optimizer(m, TrainConfig(optimizer="muon", learning_rate=2e-3, muon_precision=precision))
        train_steps(m, opt, get_scheduler("constant", opt), range(2))
        runs[precision] = m.wav2vec2.encoder.layers[0].attention.q_proj.weight.detach()
    auto = "bfloat16" if cpu_has_bfloat16_units() else "float32"
    assert torch.equal(runs["auto"], runs[auto]) and not torch.equal(runs["float32"], runs["bfloat16"])


def test_state_dict_round_trip_continues_exactly() -> None:
    """A checkpointed optimizer (accelerate saves its state_dict) continues as if never interrupted."""
    t = TrainConfig(optimizer="muon", learning_rate=2e-3, weight_decay=0.01)
    a = tiny_wav2vec2()
    opt_a = build_optimizer(a, t)
    sched_a = get_scheduler("cosine", opt_a, num_warmup_steps=1, num_training_steps=6)
    train_steps(a, opt_a, sched_a, range(3))
    saved_model, saved_opt, saved_sched = copy.deepcopy(a.state_dict()), copy.deepcopy(opt_a.state_dict()), sched_a.state_dict()
    train_steps(a, opt_a, sched_a, range(3, 6))

    b = tiny_wav2vec2()
    b.load_state_dict(saved_model)
    opt_b = build_optimizer(b, t)
    sched_b = get_scheduler("cosine", opt_b, num_warmup_steps=1, num_training_steps=6)
    opt_b.load_state_dict(saved_opt)
    sched_b.load_state_dict(saved_sched)
    assert opt_b.muon.state and opt_b.adamw.state  # momentum buffers and Adam moments came back
    train_steps(b, opt_b, sched_b, range(3, 6))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name


def test_muon_with_sharded_parameters_is_a_recipe_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """FSDP and DeepSpeed hand the optimizer flat shards, which Muon cannot orthogonalise: refused up front."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    import pipeline.training.loop as loop
    from pipeline.config import load_recipe
    from pipeline.errors import RecipeError

    class Sharded(Accelerator):
        @property
        def distributed_type(self) -> DistributedType:
            return DistributedType.FSDP

    monkeypatch.setattr(loop, "Accelerator", Sharded)
    recipe = load_recipe(QUICKSTART, [f"output_dir={tmp_path}", "train.optimizer=muon"])
    with pytest.raises(RecipeError, match="train.optimizer=muon .*FSDP"):
        loop.make_accelerator(recipe)
    recipe = load_recipe(QUICKSTART, [f"output_dir={tmp_path}"])
    assert loop.make_accelerator(recipe).distributed_type == DistributedType.FSDP  # AdamW is fine there


@pytest.mark.parametrize("override", ["train.optimizer=lion", "train.muon_ns_steps=0", "train.muon_momentum=1.0",
                                      "train.muon_convolutions=true train.mixed_precision=fp16",
                                      "train.muon_precision=float16"])
def test_bad_optimizer_keys_are_one_line_recipe_errors(override: str, tmp_path) -> None:
    from pipeline.config import load_recipe
    from pipeline.errors import RecipeError

    overrides = ["train.optimizer=muon", *override.split()] if "muon_convolutions" in override else [override]
    key = override.split("=")[0]
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        load_recipe(QUICKSTART, [f"output_dir={tmp_path}", *overrides])
    if "muon_convolutions" in override:  # bf16 has no gradient scaler: accepted
        load_recipe(QUICKSTART, [f"output_dir={tmp_path}", "train.optimizer=muon", "train.muon_convolutions=true",
                                 "train.mixed_precision=bf16"])


class ConvNet(torch.nn.Module):
    """Convolutions as FastSpeech2Conformer uses them: kernel-3 feed-forward, depthwise, 1x1, and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.ff = torch.nn.Conv1d(4, 12, 3, padding=1)
        self.depthwise = torch.nn.Conv1d(12, 12, 5, padding=2, groups=12)
        self.pointwise = torch.nn.Conv1d(12, 6, 1)
        self.feat_out = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feat_out(torch.relu(self.pointwise(self.depthwise(torch.relu(self.ff(x))))).transpose(1, 2))


def conv_steps(model: ConvNet, optimizer: torch.optim.Optimizer, seeds: range, after_backward=None) -> None:
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(2, 4, 9, generator=g), torch.randn(2, 9, 3, generator=g)
        torch.nn.functional.mse_loss(model(x.to(model.ff.weight.dtype)), y.to(model.ff.weight.dtype)).backward()
        if after_backward:
            after_backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_convolution_kernels_join_muon_as_flattened_matrices() -> None:
    model = ConvNet()
    t = TrainConfig(optimizer="muon", learning_rate=1e-2, weight_decay=0.01, muon_convolutions=True,
                    muon_precision="bfloat16")  # torch's precision, for the reference below
    assert muon_matrices(model) == []  # Linear-only by default, and the head is an output layer
    assert muon_matrices(model, convolutions=True) == [model.ff.weight, model.pointwise.weight]  # not depthwise
    combined = build_optimizer(model, t)
    on_adamw = {id(p) for g in combined.adamw.param_groups for p in g["params"]}
    assert {id(model.depthwise.weight), id(model.feat_out.weight), id(model.ff.bias)} <= on_adamw
    assert id(model.ff.weight) not in on_adamw and id(model.pointwise.weight) not in on_adamw

    # the reference: torch's Muon on 2-D copies of the kernels, written back after each step
    ref = ConvNet()
    kernels = [ref.ff.weight, ref.pointwise.weight]
    flat = [torch.nn.Parameter(k.detach().clone().flatten(1)) for k in kernels]
    muon = torch.optim.Muon(flat, lr=1e-2, weight_decay=0.01, momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw")
    rest = [p for p in ref.parameters() if all(p is not k for k in kernels)]
    decay = [ref.depthwise.weight, ref.feat_out.weight]
    adamw = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                               {"params": [p for p in rest if all(p is not d for d in decay)], "weight_decay": 0.0}],
                              lr=1e-2, betas=(0.9, 0.98), eps=1e-8, fused=True)

    def reference_step() -> None:
        for f, k in zip(flat, kernels, strict=True):
            f.grad = k.grad.flatten(1)
        muon.step()
        with torch.no_grad():
            for f, k in zip(flat, kernels, strict=True):
                k.copy_(f.view_as(k))

    class Both(torch.optim.Optimizer):
        def __init__(self) -> None:
            self.param_groups = []

        def step(self, closure=None) -> None:
            adamw.step()

        def zero_grad(self, set_to_none: bool = True) -> None:
            ref.zero_grad(set_to_none)  # every parameter of the model, the kernels included
            muon.zero_grad(set_to_none)

    before = model.ff.weight.detach().clone()
    conv_steps(model, combined, range(4))
    conv_steps(ref, Both(), range(4), after_backward=reference_step)
    assert not torch.equal(model.ff.weight, before)
    for (name, pa), pb in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7, msg=name)


def test_flattened_kernels_follow_the_model_to_new_storage_and_resume_exactly() -> None:
    """accelerate moves the model to its device after the optimizer is built, and checkpoints reload it."""
    t = TrainConfig(optimizer="muon", learning_rate=1e-2, muon_convolutions=True)
    a = ConvNet()
    opt_a = build_optimizer(a, t)
    a.double()  # new storage for every parameter, as a move to a GPU gives
    before = a.ff.weight.detach().clone()
    conv_steps(a, opt_a, range(3))
    assert not torch.equal(a.ff.weight, before)  # the update reached the model's kernel, not a stale copy
    assert opt_a.muon.state[opt_a.muon.param_groups[0]["params"][0]]["momentum_buffer"].dtype == torch.float64
    saved_model, saved_opt = copy.deepcopy(a.state_dict()), copy.deepcopy(opt_a.state_dict())
    conv_steps(a, opt_a, range(3, 6))

    b = ConvNet()
    opt_b = build_optimizer(b, t)
    b.double()
    b.load_state_dict(saved_model)
    opt_b.load_state_dict(saved_opt)
    conv_steps(b, opt_b, range(3, 6))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name


def test_fastspeech2conformer_puts_its_convolutional_feed_forwards_on_muon() -> None:
    """The acoustic model's hidden weights are mostly convolutions: `muon_convolutions` is what reaches them."""
    from transformers import FastSpeech2ConformerModel

    from pipeline.tts.acoustic import model_config

    model = FastSpeech2ConformerModel(model_config({"preset": "tiny"}, vocab_size=20, n_mels=80))
    names = {id(p): n for n, p in model.named_parameters()}
    linear_only = {names[id(p)] for p in muon_matrices(model)}
    chosen = {names[id(p)] for p in muon_matrices(model, convolutions=True)}
    assert linear_only < chosen
    assert "encoder.conformer_layers.0.feed_forward.conv1.weight" in chosen  # (64, 32, 3) as a 64 x 96 matrix
    assert "decoder.conformer_layers.0.conv_module.pointwise_conv1.weight" in chosen
    assert "duration_predictor.conv_layers.0.conv.weight" in chosen
    assert not any("depthwise" in n or n.startswith("speech_decoder_postnet.feat_out") for n in chosen)
    assert "pitch_embed.conv.weight" not in chosen  # one input channel, kernel 1: a vector, not a matrix
    on_muon = sum(model.get_parameter(n).numel() for n in chosen)
    assert on_muon > 0.6 * sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("bf16_units", [True, False])
def test_auto_picks_muon_where_bfloat16_is_fast(bf16_units: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.training.optimizers as optimizers

    monkeypatch.setattr(optimizers, "cpu_has_bfloat16_units", lambda *a: bf16_units)
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert choose_optimizer("auto", cpu) == ("muon" if bf16_units else "adamw")
    assert choose_optimizer("auto", gpu) == "muon"
    assert choose_optimizer("auto", gpu, sharded=True) == "adamw"  # FSDP/DeepSpeed shards: no whole matrices
    assert choose_optimizer("muon", cpu) == "muon" and choose_optimizer("adamw", gpu) == "adamw"  # asked for: as asked
    opt = build_optimizer(tiny_wav2vec2(), TrainConfig(optimizer="auto", learning_rate=1e-3))
    assert isinstance(opt, MuonWithAdamW) == bf16_units and isinstance(opt, torch.optim.Optimizer)


# scripts/train.py on a pretend machine: argv[1] says whether its CPU has bfloat16 units
ON_MACHINE = """
import runpy, sys
import pipeline.training.optimizers as optimizers
units = sys.argv[1] == "bf16"
optimizers.cpu_has_bfloat16_units = lambda *a: units
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_auto_is_recorded_and_a_resume_keeps_the_checkpoints_optimizer(tiny_corpus: Path, tiny_recipe_overrides,
                                                                     tmp_path: Path) -> None:
    """auto resolves per machine; a run resumed on another machine continues with the optimizer its checkpoint
    state belongs to (the other one's state would not load), and says so."""
    common = [QUICKSTART, *tiny_recipe_overrides("parakeet"), "train.optimizer=auto",
              f"data.train={tiny_corpus / 'train'}", f"data.eval={tiny_corpus / 'test'}", "train.save_every=2",
              "train.eval_every=1000", "train.batch_seconds=6", "eval.max_utterances=2"]

    def train(machine: str, out: Path, *more: str) -> subprocess.CompletedProcess[str]:
        proc = run_python(["-c", ON_MACHINE, machine, REPO / "scripts" / "train.py", *common, f"output_dir={out}",
                           *more])
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def results(out: Path) -> dict:
        return json.loads((out / "train_results.json").read_text(encoding="utf-8"))

    fast, plain = tmp_path / "fast", tmp_path / "plain"
    train("bf16", fast, "train.max_steps=2")
    train("none", plain, "train.max_steps=2")
    assert results(fast)["optimizer"] == "muon" and results(plain)["optimizer"] == "adamw"
    state = json.loads((fast / "checkpoints" / "step-00000002" / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["optimizer"] == "muon"

    resumed = train("none", fast, "train.max_steps=4", "train.resume=true")
    assert "resumed from" in resumed.stderr and "muon, as in the checkpoint" in resumed.stderr
    assert results(fast)["optimizer"] == "muon" and results(fast)["steps"] == 4
