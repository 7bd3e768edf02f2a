"""Multi-process training and evaluation with real processes: 2 CPU processes (torchrun, gloo).

Every run is a subprocess (`python -m torch.distributed.run --nproc_per_node 2 ...` or plain
`python ...` for one process) on a tiny synthetic corpus and a tiny model, with dropout, layerdrop
and SpecAugment off so that a run is a deterministic function of its recipe. Runs are module-scoped
fixtures shared between the tests that need them. CUDA is hidden from the subprocesses: these tests
are about the CPU/gloo path and must behave the same on a GPU machine.

Two model families are used:
- `parakeet` (recipes/asr/conformer_quickstart.yaml shrunk by overrides) for resume, unequal
  shards, evaluation and non-finite steps;
- a tiny `wav2vec2` with layer-norm feature encoder (the same recipe, `model` replaced) for
  "2 processes x B == 1 process x 2B". Parakeet's conformer convolution module holds a
  `BatchNorm1d`, whose training-mode statistics are computed over the *local* batch (and its
  padding): two half-batches normalise differently than one full batch, so for that family data
  parallelism is not mathematically the same as a bigger batch (it is plain DDP behaviour, not a
  loop bug; measured: ~1e-2 parameter difference after 6 steps). wav2vec2 with layer norms makes
  each utterance's loss independent of its batch-mates, so the loop's claim can be checked exactly.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from pipeline.synth.corpus import synthesize_corpus
from pipeline.training.checkpoint import complete_checkpoints, latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train.py"
QUICKSTART = ROOT / "recipes" / "asr" / "conformer_quickstart.yaml"

# The quickstart recipe, shrunk and made deterministic.
TINY_PARAKEET = [
    "model.config.encoder_config.hidden_size=32",
    "model.config.encoder_config.num_hidden_layers=2",  # the recipe's intermediate CTC reads layer 1
    "model.config.encoder_config.num_attention_heads=2",
    "model.config.encoder_config.intermediate_size=64",
    "model.config.encoder_config.subsampling_conv_channels=32",
    "model.config.encoder_config.dropout=0",
    "model.config.encoder_config.attention_dropout=0",
    "model.config.encoder_config.activation_dropout=0",
    "model.config.encoder_config.layerdrop=0",
    "model.mask_time_prob=0",
    "model.mask_feature_prob=0",
]
# Augmentation draws per-process random numbers: off, so that 1 and 2 processes see the same inputs.
COMMON = ["train.threads=1", "train.max_minutes=null", "train.log_every=1", "train.keep_last=3",
          "data.augment.speed=null", "data.augment.vtlp=0"]

W2V_RECIPE = f"""\
base: {QUICKSTART}
model:
  family: wav2vec2
  config:
    hidden_size: 32
    num_hidden_layers: 1
    num_attention_heads: 2
    intermediate_size: 64
    conv_dim: [16, 16, 16, 16, 16, 16, 16]
    feat_extract_norm: layer
    do_stable_layer_norm: true
    num_conv_pos_embeddings: 16
    num_conv_pos_embedding_groups: 2
    hidden_dropout: 0.0
    attention_dropout: 0.0
    activation_dropout: 0.0
    feat_proj_dropout: 0.0
    final_dropout: 0.0
    layerdrop: 0.0
  mask_time_prob: 0.0
  mask_feature_prob: 0.0
  inter_ctc_weight: 0.0
train:
  optimizer: adamw  # the quickstart's `auto` is Muon on CPUs with bfloat16 units: these tests reason about AdamW's
                    # arithmetic (Muon under DDP has its own test and tolerance)
"""

# Training wrapper used where per-process facts are needed (each rank writes probe-rank{R}.json):
# steps run, steps skipped, empty shards received, a digest of its final parameters, and whether
# its parameters and buffers are all finite.
# PROBE_NAN_RANK / PROBE_NAN_CALL poison the input features of one loss call on one process.
PROBE = """\
import hashlib, json, os, sys
import torch
from pipeline.config import load_recipe
from pipeline.data.batching import DurationBatchSampler
from pipeline.tasks.asr import ASRTask
from pipeline.training import loop

rank = int(os.environ.get("RANK", "0"))
counts = {"empty_shards": 0, "loss_calls": 0}
_shard = DurationBatchSampler.shard
def shard(self, batch):
    mine = _shard(self, batch)
    counts["empty_shards"] += not mine
    return mine
DurationBatchSampler.shard = shard

_loss = ASRTask.loss
def loss(self, model, batch):
    counts["loss_calls"] += 1
    if str(rank) == os.environ.get("PROBE_NAN_RANK") and counts["loss_calls"] == int(os.environ["PROBE_NAN_CALL"]):
        key = self.feature_extractor.model_input_names[0]
        batch = {**batch, key: batch[key] * float("nan")}
    return _loss(self, model, batch)
ASRTask.loss = loss

seen = {}
_fit = loop.Trainer.fit
def fit(self):
    summary = _fit(self)
    model = self.task.model
    digest = hashlib.sha256()  # parameters only: DDP syncs buffers from process 0 at each forward, so
    for name, p in sorted(model.named_parameters()):  # process 1's hold what its own last forward left
        digest.update(name.encode() + p.detach().cpu().contiguous().numpy().tobytes())
    state = model.state_dict()  # parameters and buffers (BatchNorm statistics)
    seen.update(summary, digest=digest.hexdigest(),
                finite=all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()))
    return summary
loop.Trainer.fit = fit

loop.run_training(load_recipe(sys.argv[1], sys.argv[2:]))
out = load_recipe(sys.argv[1], sys.argv[2:]).output_dir
with open(os.path.join(out, f"probe-rank{rank}.json"), "w") as f:
    json.dump({**seen, **counts}, f)
"""

EVAL = """\
import sys
from accelerate import Accelerator
from pipeline.config import DataSpec
from pipeline.evaluation.evaluate import evaluate_model

acc = Accelerator(cpu=True)
evaluate_model(sys.argv[1], DataSpec(path=sys.argv[2]), sys.argv[3], accelerator=acc)
acc.wait_for_everyone()
"""


# ------------------------------------------------------------------------------------------------
# helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port())]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # A session of its own, so that the launcher and every worker it starts can be killed together.
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a launched command and every process under it, all at once (a machine crash).

    torchrun starts each worker in a session of its own, so killing the launcher's process group
    alone would leave the workers running: collect the whole tree first."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for pid in [proc.pid, *(c.pid for c in tree)]:
        try:
            os.killpg(pid, signal.SIGKILL) if pid == proc.pid else os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()
    psutil.wait_procs(tree, timeout=30)


def tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        pytest.fail(f"timed out after {timeout:.0f} s (a hang?):\n{tail(log)}")
    assert proc.returncode == 0, f"exit code {proc.returncode}:\n{tail(log)}"


# Generous: a run takes ~10 s on an idle 2-core machine, but minutes when the cores are shared; a real
# hang (mismatched collectives) still ends in a failure that shows the log.
TIMEOUT = 900


def run(cmd: list[str], env: dict[str, str], log: Path, timeout: float = TIMEOUT) -> None:
    finish(start(cmd, env, log), log, timeout)


def train_cmd(nproc: int, recipe: Path, out: Path, overrides: list[str], script: Path = TRAIN) -> list[str]:
    return [*launcher(nproc), str(script), str(recipe), f"output_dir={out}", *overrides]


def params(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def loss_log(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def assert_same_params(a: Path, b: Path, atol: float = 0.0, rtol: float = 0.0) -> None:
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        if atol == 0.0 and rtol == 0.0:
            assert torch.equal(pa[k], pb[k]), f"{k}: max |diff| {(pa[k] - pb[k]).abs().max().item():.3g}"
        else:
            torch.testing.assert_close(pa[k], pb[k], atol=atol, rtol=rtol, msg=lambda m, k=k: f"{k}: {m}")


def logged_steps(out: Path) -> list[int]:
    """Steps in train_log.jsonl so far (tolerates a line being written right now)."""
    try:
        text = (out / "train_log.jsonl").read_text()
    except FileNotFoundError:
        return []
    steps = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "loss" in row:
            steps.append(row["step"])
    return steps


def kill_after_checkpoint(proc: subprocess.Popen, out: Path, min_step: int, log: Path, timeout: float = TIMEOUT) -> int:
    """SIGKILL the run (every process) between two checkpoints: once a complete checkpoint at
    >= min_step exists and the run has logged a later step. Returns the newest complete checkpoint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ckpt = latest_checkpoint(out)
        if ckpt is not None and int(ckpt.name.split("-")[1]) >= min_step and max(logged_steps(out), default=0) > int(ckpt.name.split("-")[1]):
            break
        if proc.poll() is not None:
            pytest.fail(f"training ended (exit {proc.returncode}) before a checkpoint at step >= {min_step}:\n{tail(log)}")
        time.sleep(0.01)
    else:
        kill_group(proc)
        pytest.fail(f"no checkpoint at step >= {min_step} within {timeout} s:\n{tail(log)}")
    alive = proc.poll() is None
    kill_group(proc)
    assert alive, f"training finished before it could be killed (kill step {min_step}): make the run longer"
    assert not (out / "train_results.json").exists(), "the run completed: the kill came too late to test resume"
    last = int(latest_checkpoint(out).name.split("-")[1])  # type: ignore[union-attr]
    # The killed run logged past its last checkpoint: resume must drop those records, then redo them.
    assert max(logged_steps(out), default=0) > last, f"killed right at checkpoint {last}: nothing past it to discard"
    return last


def resumed_from(log: Path) -> str:
    """The checkpoint folder named by the 'resumed from' log line(s) (one per process that logs INFO)."""
    found = {line.split("resumed from ", 1)[1].split()[0] for line in log.read_text(errors="replace").splitlines()
             if "resumed from " in line}
    assert len(found) == 1, f"expected the run to resume from one checkpoint, found {found}:\n{tail(log)}"
    return Path(found.pop()).name


# ------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def env(work: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("ACCELERATE_", "MASTER_", "TORCHELASTIC_"))
         and k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK")}
    e.update(SPEECH_PIPELINE_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
             TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
             TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return e


@pytest.fixture(scope="module")
def corpus(work: Path) -> dict[str, Path]:
    """12 train / 5 test utterances (odd: unequal eval shards), plus `uneven`: train + 2 long files."""
    root = work / "corpus"
    synthesize_corpus(root, n_train=12, n_test=5, seed=11, sample_rate=16000, progress=False)
    uneven = work / "uneven"
    uneven.mkdir()
    rows = (root / "train" / "metadata.csv").read_text(encoding="utf-8").splitlines()
    header, rows = rows[0], rows[1:]
    for row in rows:
        name = row.split(",", 1)[0]
        shutil.copy(root / "train" / name, uneven / name)
    extra = []
    for k in range(2):  # ~4x the typical duration: a global batch of its own
        parts = [r.split(",") for r in rows[4 * k : 4 * k + 4]]
        audio = np.concatenate([sf.read(root / "train" / p[0], dtype="float32")[0] for p in parts])
        sf.write(uneven / f"long{k}.wav", audio, 16000, subtype="PCM_16")
        extra.append(f"long{k}.wav,{' '.join(p[1] for p in parts)},{parts[0][2]}")
    (uneven / "metadata.csv").write_text("\n".join([header, *rows, *extra]) + "\n", encoding="utf-8")
    return {"train": root / "train", "test": root / "test", "uneven": uneven}


@pytest.fixture(scope="module")
def w2v_recipe(work: Path) -> Path:
    path = work / "w2v_tiny.yaml"
    path.write_text(W2V_RECIPE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def probe_script(work: Path) -> Path:
    path = work / "probe_train.py"
    path.write_text(PROBE, encoding="utf-8")
    return path


W2V_STEPS = 16
PARAKEET_STEPS = 24


def w2v_overrides(corpus: dict[str, Path], batch_seconds: float) -> list[str]:
    return [f"data.train={corpus['train']}", "data.eval=null", f"train.max_steps={W2V_STEPS}", "train.save_every=2",
            f"train.batch_seconds={batch_seconds}", *COMMON]


def parakeet_overrides(corpus: dict[str, Path]) -> list[str]:
    return [*TINY_PARAKEET, f"data.train={corpus['train']}", "data.eval=null", f"train.max_steps={PARAKEET_STEPS}",
            "train.save_every=2", "train.batch_seconds=8", *COMMON]


@pytest.fixture(scope="module")
def w2v_two_procs(work: Path, env: dict[str, str], corpus: dict[str, Path], w2v_recipe: Path) -> Path:
    out = work / "w2v-2proc"
    run(train_cmd(2, w2v_recipe, out, w2v_overrides(corpus, 4)), env, work / "w2v-2proc.log")
    return out


@pytest.fixture(scope="module")
def w2v_one_proc(work: Path, env: dict[str, str], corpus: dict[str, Path], w2v_recipe: Path) -> Path:
    out = work / "w2v-1proc"
    run(train_cmd(1, w2v_recipe, out, w2v_overrides(corpus, 8)), env, work / "w2v-1proc.log")
    return out


@pytest.fixture(scope="module")
def parakeet_reference(work: Path, env: dict[str, str], corpus: dict[str, Path]) -> Path:
    out = work / "parakeet-ref"
    run(train_cmd(1, QUICKSTART, out, parakeet_overrides(corpus)), env, work / "parakeet-ref.log")
    return out


@pytest.fixture(scope="module")
def uneven_run(work: Path, env: dict[str, str], corpus: dict[str, Path], probe_script: Path) -> Path:
    """2 processes, one epoch, tiny per-process budget (1.5 s): most global batches hold a single
    utterance, so one process gets an empty shard; accumulation 2 exercises no_sync with the filler, and the
    layers recompute their activations in the backward pass under DDP (gradient checkpointing). The learning rate is tiny so the saved model stays near its (non-blank-emitting) initialisation,
    which gives the evaluation test below non-empty, varied hypotheses to compare."""
    out = work / "uneven-run"
    overrides = [*TINY_PARAKEET, f"data.train={corpus['uneven']}", f"data.eval={corpus['test']}", "train.epochs=1",
                 "train.max_steps=null", "train.batch_seconds=1.5", "train.gradient_accumulation=2",
                 "train.learning_rate=1e-6", "train.gradient_checkpointing=true", *COMMON]
    run(train_cmd(2, QUICKSTART, out, overrides, script=probe_script), env, work / "uneven-run.log")
    assert "train.gradient_checkpointing: 2 layers recompute" in (work / "uneven-run.log").read_text()
    return out


# ------------------------------------------------------------------------------------------------
# (a) 2 processes x B == 1 process x 2B


def test_two_processes_match_one_process_with_twice_the_budget(w2v_one_proc: Path, w2v_two_procs: Path) -> None:
    # Same global batches, same loss normalisation (summed loss / global unit count): the only
    # difference is the order in which floats are summed (gloo's all-reduce adds the two halves'
    # gradients; one process sums the whole batch inside each kernel). Float addition is not
    # associative, so the results differ in the last bits (~1e-7 relative) and Adam carries those
    # differences on; after 16 steps they stay around 1e-6, far below the ~1e-2 a real mismatch
    # (e.g. a wrong loss scale or a dropped utterance) produces. Hence atol 1e-5, not bitwise.
    assert_same_params(w2v_one_proc, w2v_two_procs, atol=1e-5, rtol=1e-4)
    one, two = loss_log(w2v_one_proc), loss_log(w2v_two_procs)
    assert [s for s, _ in one] == [s for s, _ in two] == list(range(1, W2V_STEPS + 1))
    np.testing.assert_allclose([v for _, v in one], [v for _, v in two], rtol=1e-5)
    r1 = json.loads((w2v_one_proc / "train_results.json").read_text())
    r2 = json.loads((w2v_two_procs / "train_results.json").read_text())
    assert r1["steps"] == r2["steps"] == W2V_STEPS and r1["audio_hours_seen"] == r2["audio_hours_seen"]


def test_muon_under_ddp_matches_one_process(work: Path, env: dict[str, str], corpus: dict[str, Path],
                                           w2v_recipe: Path) -> None:
    """Muon orthogonalises each process's copy of the all-reduced gradient: DDP gives the same model.

    The losses agree step by step as tightly as AdamW's do (test above). The Muon matrices agree less
    tightly: Newton-Schulz lifts a momentum's small singular values, float noise included, to ~1, so the
    1e-7 differences of the all-reduce grow to ~6e-4 after 16 steps (measured); weights are ~0.1."""
    runs = {}
    for nproc, budget in ((1, 8), (2, 4)):
        runs[nproc] = work / f"w2v-muon-{nproc}proc"
        run(train_cmd(nproc, w2v_recipe, runs[nproc], [*w2v_overrides(corpus, budget), "train.optimizer=muon"]), env,
            work / f"w2v-muon-{nproc}proc.log")
    np.testing.assert_allclose([v for _, v in loss_log(runs[1])], [v for _, v in loss_log(runs[2])], rtol=1e-5)
    assert_same_params(runs[1], runs[2], atol=3e-3, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# (b) distributed evaluation == single-process evaluation


def test_distributed_evaluation_matches_single_process(work: Path, env: dict[str, str], corpus: dict[str, Path],
                                                       uneven_run: Path) -> None:
    script = work / "evaluate_inline.py"
    script.write_text(EVAL, encoding="utf-8")
    outs = {}
    for nproc in (1, 2):
        out = outs[nproc] = work / f"eval-{nproc}proc"
        run([*launcher(nproc), str(script), str(uneven_run), str(corpus["test"]), str(out)], env, work / f"eval-{nproc}.log")
    m1, m2 = (json.loads((outs[n] / "metrics.json").read_text()) for n in (1, 2))
    assert m1 == m2
    assert m1["num_utterances"] == 5  # odd: shards of 3 and 2
    p1, p2 = ((outs[n] / "predictions.jsonl").read_text().splitlines() for n in (1, 2))
    assert p1 == p2  # the same rows in the same order, byte for byte
    rows = [json.loads(line) for line in p1]
    audios = sorted(p.name for p in corpus["test"].glob("*.wav"))
    assert sorted(Path(r["audio"]).name for r in rows) == audios  # every utterance once, none twice
    assert any(r["hypothesis"] for r in rows), "all hypotheses empty: the comparison would be vacuous"


# ------------------------------------------------------------------------------------------------
# (c) unequal shards, lonely utterances, accumulation: no hang, the same steps everywhere


def test_unequal_shards_do_not_hang(corpus: dict[str, Path], uneven_run: Path) -> None:
    probes = [json.loads((uneven_run / f"probe-rank{r}.json").read_text()) for r in (0, 1)]
    assert probes[0]["steps"] == probes[1]["steps"] > 0
    assert probes[0]["digest"] == probes[1]["digest"]  # the processes hold the same model
    assert sum(p["empty_shards"] for p in probes) > 0, "no process ever got an empty shard: the test proves nothing"
    results = json.loads((uneven_run / "train_results.json").read_text())
    assert results["steps"] == probes[0]["steps"] and results["epochs_completed"] == 1
    assert "eval_wer" in results
    # Every utterance of the epoch was trained on exactly once: audio seen == corpus audio.
    corpus_hours = sum(sf.info(str(p)).duration for p in corpus["uneven"].glob("*.wav")) / 3600
    assert results["audio_hours_seen"] == pytest.approx(corpus_hours, abs=1e-3)


# ------------------------------------------------------------------------------------------------
# (d) SIGKILL + resume == uninterrupted, bitwise (one process); torn checkpoints are ignored


def test_sigkill_then_resume_is_bitwise_identical(work: Path, env: dict[str, str], corpus: dict[str, Path],
                                                  parakeet_reference: Path) -> None:
    kill_step = random.Random().randrange(2, PARAKEET_STEPS - 8, 2)
    out, log = work / "parakeet-killed", work / "parakeet-killed.log"
    cmd = train_cmd(1, QUICKSTART, out, parakeet_overrides(corpus))
    last = kill_after_checkpoint(start(cmd, env, log), out, kill_step, log)
    # A crash in the middle of writing the next checkpoint: a temporary folder, and a final-named
    # folder without trainer_state.json (the file written last). Neither may be resumed from.
    torn = out / "checkpoints" / f"step-{last + 2:08d}"
    if not torn.exists():
        torn.mkdir()
        (torn / "model.safetensors").write_bytes(b"\0garbage")
    tmp = out / "checkpoints" / f".tmp-step-{last + 4:08d}"
    tmp.mkdir(exist_ok=True)
    (tmp / "optimizer.bin").write_bytes(b"half")
    assert latest_checkpoint(out).name == f"step-{last:08d}"  # type: ignore[union-attr]

    resume_log = work / "parakeet-resumed.log"
    run([*cmd, "train.resume=true"], env, resume_log)
    assert resumed_from(resume_log) == f"step-{last:08d}", f"kill step {kill_step}"
    assert_same_params(parakeet_reference, out)  # bitwise
    assert loss_log(out) == loss_log(parakeet_reference)  # the log has no gap and no repeated step
    assert not list((out / "checkpoints").glob(".tmp-step-*"))
    steps = [int(p.name.split("-")[1]) for p in complete_checkpoints(out)]
    assert steps == [PARAKEET_STEPS - 4, PARAKEET_STEPS - 2, PARAKEET_STEPS]  # keep_last=3 rotation


def test_latest_checkpoint_skips_incomplete_folders(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for name, complete in (("step-00000002", True), ("step-00000004", True), ("step-00000006", False),
                           (".tmp-step-00000008", True), ("step-x", True)):
        (root / name).mkdir(parents=True)
        if complete:
            (root / name / "trainer_state.json").write_text("{}")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-00000002", "step-00000004"]
    assert latest_checkpoint(tmp_path).name == "step-00000004"  # type: ignore[union-attr]
    assert latest_checkpoint(tmp_path / "nothing") is None


# ------------------------------------------------------------------------------------------------
# (e) SIGKILL + resume under 2 processes


def test_two_process_resume_matches_uninterrupted(work: Path, env: dict[str, str], corpus: dict[str, Path],
                                                  w2v_recipe: Path, w2v_two_procs: Path) -> None:
    kill_step = random.Random().randrange(2, W2V_STEPS - 6, 2)
    out, log = work / "w2v-2proc-killed", work / "w2v-2proc-killed.log"
    overrides = w2v_overrides(corpus, 4)
    last = kill_after_checkpoint(start(train_cmd(2, w2v_recipe, out, overrides), env, log), out, kill_step, log)
    resume_log = work / "w2v-2proc-resumed.log"
    run(train_cmd(2, w2v_recipe, out, [*overrides, "train.resume=true"]), env, resume_log)
    assert resumed_from(resume_log) == f"step-{last:08d}", f"kill step {kill_step}"
    # Same process count and the same reduction order as the uninterrupted run: bitwise equal.
    assert_same_params(w2v_two_procs, out)
    assert loss_log(out) == loss_log(w2v_two_procs)
    ckpt = json.loads((latest_checkpoint(out) / "trainer_state.json").read_text())  # type: ignore[operator]
    assert ckpt["step"] == W2V_STEPS and {f.name for f in latest_checkpoint(out).iterdir()} >= {  # type: ignore[union-attr]
        "model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "random_states_1.pkl"}


def test_resume_on_another_process_count(work: Path, env: dict[str, str], corpus: dict[str, Path], w2v_recipe: Path,
                                         w2v_one_proc: Path) -> None:
    """A one-process run's checkpoint resumed by two processes (a job requeued on another number of GPUs): refused
    by default with one line; with train.resume_exact=false it trains on, process 1 with fresh random states."""
    out = work / "w2v-1to2"
    shutil.copytree(w2v_one_proc, out)
    overrides = [*w2v_overrides(corpus, 4), f"train.max_steps={W2V_STEPS + 4}", "train.resume=true"]
    refused = work / "w2v-1to2-refused.log"
    proc = start(train_cmd(2, w2v_recipe, out, overrides), env, refused)
    assert proc.wait(timeout=TIMEOUT) != 0, tail(refused)
    assert "error: train.resume: " in refused.read_text() and "(processes 1 -> 2; train.batch_seconds 8.0 -> 4.0)" \
        in refused.read_text(), tail(refused)
    assert json.loads((out / "train_results.json").read_text())["steps"] == W2V_STEPS  # nothing trained
    log = work / "w2v-1to2.log"
    run(train_cmd(2, w2v_recipe, out, [*overrides, "train.resume_exact=false"]), env, log)
    text = log.read_text(errors="replace")
    assert "random_states_1.pkl: cannot restore the random states" in text and "goes on with fresh ones" in text
    assert "train.resume_exact=false: " in text, tail(log)
    assert resumed_from(log) == f"step-{W2V_STEPS:08d}"
    assert json.loads((out / "train_results.json").read_text())["steps"] == W2V_STEPS + 4
    assert all(torch.isfinite(p).all() for p in params(out).values() if p.is_floating_point())


# ------------------------------------------------------------------------------------------------
# (f) a non-finite step is skipped on every process and counted


def test_nonfinite_step_is_skipped_everywhere(work: Path, env: dict[str, str], corpus: dict[str, Path],
                                              probe_script: Path) -> None:
    # NaN input features on process 0 at its 3rd loss call (= step 3): NaN activations, loss and,
    # after the all-reduce, NaN gradients on both processes. Process 0 is the one whose buffers
    # (BatchNorm running statistics) DDP broadcasts, so a skipped step must not leave them NaN.
    out = work / "nan"
    overrides = [*TINY_PARAKEET, f"data.train={corpus['train']}", "data.eval=null", "train.max_steps=5",
                 "train.batch_seconds=4", *COMMON]
    run(train_cmd(2, QUICKSTART, out, overrides, script=probe_script), {**env, "PROBE_NAN_RANK": "0", "PROBE_NAN_CALL": "3"},
        work / "nan.log")
    probes = [json.loads((out / f"probe-rank{r}.json").read_text()) for r in (0, 1)]
    assert [p["skipped_nonfinite_steps"] for p in probes] == [1, 1]
    assert all(p["finite"] for p in probes)
    assert probes[0]["digest"] == probes[1]["digest"]
    results = json.loads((out / "train_results.json").read_text())
    assert results["skipped_nonfinite_steps"] == 1 and results["steps"] == 5
    assert all(torch.isfinite(t).all() for t in params(out).values() if t.is_floating_point())
    losses = loss_log(out)
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5] and all(np.isfinite(v) for _, v in losses)


def test_early_stopping_stops_every_process_on_the_best_model(work: Path, env: dict[str, str],
                                                              corpus: dict[str, Path], probe_script: Path) -> None:
    # Only process 0 scores an evaluation: the decision to stop must reach process 1, or it trains on alone
    # and the run hangs at its next collective.
    out = work / "best"
    overrides = [*TINY_PARAKEET, f"data.train={corpus['train']}", f"data.eval={corpus['test']}", "train.max_steps=40",
                 "train.batch_seconds=4", "train.eval_every=1", "train.save_every=1000", "train.final_model=best",
                 "train.best_metric=cer", "train.early_stopping_patience=2", *COMMON]
    run(train_cmd(2, QUICKSTART, out, overrides, script=probe_script), env, work / "best.log")
    probes = [json.loads((out / f"probe-rank{r}.json").read_text()) for r in (0, 1)]
    results = json.loads((out / "train_results.json").read_text())
    assert results["stop_reason"] == "early_stopping (2 evaluations without improvement)"
    assert probes[0]["steps"] == probes[1]["steps"] == results["steps"] == results["best_step"] + 2 < 40
    assert probes[0]["digest"] == probes[1]["digest"]  # both restored the best checkpoint
    best = load_file(out / "checkpoints" / f"step-{results['best_step']:08d}" / "model.safetensors")
    final = params(out)
    assert final.keys() == best.keys() and all(torch.equal(final[k], best[k]) for k in final)

# ------------------------------------------------------------------------------------------------
# recipes/accelerate/*.yaml: every config parses and passes `accelerate launch`'s own validation


ACCELERATE_CONFIGS = {
    "single_gpu.yaml": ("NO", 1, 1),
    "multi_gpu_ddp.yaml": ("MULTI_GPU", 8, 1),
    "multi_node.yaml": ("MULTI_GPU", 16, 2),
    "fsdp.yaml": ("FSDP", 8, 1),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 8, 1),
}


def test_accelerate_config_folder_is_covered() -> None:
    assert {p.name for p in (ROOT / "recipes" / "accelerate").glob("*.yaml")} == set(ACCELERATE_CONFIGS)


@pytest.mark.parametrize("name", sorted(ACCELERATE_CONFIGS))
def test_accelerate_config_loads_and_validates(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import prepare_multi_gpu_env

    monkeypatch.chdir(ROOT)  # deepspeed_config_file is relative to the repository root
    path = f"recipes/accelerate/{name}"
    cfg = load_config_from_file(path)
    kind, nproc, machines = ACCELERATE_CONFIGS[name]
    assert (str(cfg.distributed_type).split(".")[-1], cfg.num_processes, cfg.num_machines) == (kind, nproc, machines)
    # What `accelerate launch --config_file PATH scripts/train.py RECIPE` does before starting anything.
    args = launch_command_parser().parse_args(["--config_file", path, str(TRAIN), str(QUICKSTART)])
    args, _, _ = _validate_launch_command(args)
    if kind == "FSDP":
        from accelerate.utils import FullyShardedDataParallelPlugin

        for key, value in prepare_multi_gpu_env(args).items():
            if key.startswith("FSDP_"):
                monkeypatch.setenv(key, value)
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    elif kind == "MULTI_GPU":
        env = prepare_multi_gpu_env(args)
        assert env["ACCELERATE_MIXED_PRECISION"] == "no"
    elif kind == "DEEPSPEED":
        from accelerate.utils import DeepSpeedPlugin

        plugin = DeepSpeedPlugin(hf_ds_config=cfg.deepspeed_config["deepspeed_config_file"])
        assert plugin.zero_stage == 2
        # The loop prepares no DataLoader, so accelerate cannot fill an "auto" micro-batch size.
        assert not plugin.is_auto("train_micro_batch_size_per_gpu")
        assert plugin.deepspeed_config["gradient_accumulation_steps"] == 1


def test_fsdp_wrap_policy_finds_parakeet_and_wav2vec2_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin, prepare_multi_gpu_env
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from transformers import ParakeetCTCConfig, ParakeetForCTC, Wav2Vec2Config, Wav2Vec2ForCTC

    args = launch_command_parser().parse_args(["--config_file", str(ROOT / "recipes/accelerate/fsdp.yaml"), str(TRAIN)])
    for key, value in prepare_multi_gpu_env(_validate_launch_command(args)[0]).items():  # the env launch would set
        if key.startswith("FSDP_"):
            monkeypatch.setenv(key, value)
    tiny = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}
    parakeet = ParakeetForCTC(ParakeetCTCConfig(encoder_config={**tiny, "subsampling_conv_channels": 16}, vocab_size=8))
    policy = fsdp2_prepare_auto_wrap_policy(FullyShardedDataParallelPlugin(), parakeet)
    assert sum(policy(m) for m in parakeet.modules()) == 2  # the model's _no_split_modules: one unit per block
    # wav2vec2 declares no _no_split_modules: the layer class named as fsdp.yaml's comment says
    w2v = Wav2Vec2ForCTC(Wav2Vec2Config(**tiny, conv_dim=(8,) * 7, do_stable_layer_norm=True, feat_extract_norm="layer",
                                        num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, vocab_size=8))
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "Wav2Vec2EncoderLayerStableLayerNorm")
    policy = fsdp2_prepare_auto_wrap_policy(FullyShardedDataParallelPlugin(), w2v)
    assert sum(policy(m) for m in w2v.modules()) == 2
