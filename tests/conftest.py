"""Shared pytest fixtures: a tiny synthetic corpus, tiny model recipes and one tiny trained model.

Everything here is offline and small enough for a 2-core machine. Reuse them in any test file:

``tiny_corpus`` (session) -> ``Path``
    An espeak-ng corpus in audiofolder layout made by ``synthesize_corpus`` (40 train / 12 test
    utterances, 16 kHz): ``tiny_corpus / "train"`` and ``tiny_corpus / "test"`` each hold
    ``metadata.csv`` (file_name,text,speaker) and ``000000.wav``... Treat it as read-only.

``tiny_recipe_overrides`` (session) -> ``callable(family="parakeet") -> list[str]``
    ``key=value`` overrides for ``recipes/asr/conformer_quickstart.yaml`` (or any recipe) that
    swap in a very small model of the given family (``"parakeet"`` or ``"wav2vec2"``), with
    ``train.threads=1`` and no wall-clock cap. Add your own data/output/step overrides::

        overrides = tiny_recipe_overrides("wav2vec2") + [f"output_dir={tmp_path}", ...]

    The same helper is importable as ``conftest.tiny_overrides``.

``run_script`` (session) -> ``callable(script, *args, timeout=300, env=None) -> CompletedProcess``
    Runs ``scripts/<script>`` with ``sys.executable`` from the repository root (``OMP_NUM_THREADS=1``,
    plus ``env``) and captures text stdout/stderr (never raises on a non-zero exit code; check
    ``.returncode`` yourself). Each run is a process of its own, forked from a server that has imported
    torch, transformers and datasets already (tests/_script_runner.py; ``SPEECH_PIPELINE_TEST_FORK=0``
    or an ``env`` that changes the environment starts a fresh interpreter instead).

``trained_tiny_model`` (session) -> ``Path``
    The output directory of one real ``scripts/train.py`` run (subprocess) of the quickstart recipe
    with the tiny Parakeet model on ``tiny_corpus`` for 8 steps (a checkpoint every 4 steps, no
    periodic evaluation). The learning rate is tiny on purpose, so the model still emits non-blank
    characters: comparisons between inference paths are then not trivially ``"" == ""``.
    Treat it as read-only; the full recipe used is saved as ``recipe.yaml`` inside it.

``parakeet_tokenizer(pieces=...) -> ParakeetTokenizer`` (a function)
    A SentencePiece-style (Unigram + Metaspace) tokenizer built offline, blank ("<pad>") last, as
    transformers' NeMo conversion makes them for Parakeet CTC checkpoints.

``local_wav2vec2(text, num_hidden_layers=0, do_normalize=False) -> (model, fe, tok)`` (a function)
    A tiny random wav2vec 2.0 CTC model with a character vocabulary of ``text``; with no attention
    layers every output frame sees a few dozen samples (chunked logits then equal unchunked ones).

``lone_pass_texts(asr, audio, sr) -> (every_frame, audio_frames)`` (a function)
    What ``transformers.pipeline`` computes for one utterance, by hand: the greedy transcript of
    every output frame (the pipeline's text) and of the frames the model counts as audio (ours;
    see ``pipeline.evaluation.inference.output_mask``). They differ only on Parakeet, and only when
    its padding frame is not blank.

The session also sets ``HF_HUB_OFFLINE=1`` (at import, before any Hugging Face library is loaded)
and points ``SPEECH_PIPELINE_CACHE`` at a temporary folder, for this process and its subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _script_runner
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "asr" / "conformer_quickstart.yaml"
FSDD = REPO.parent / "shared" / "data" / "fsdd"

TINY_MODEL_CONFIGS: dict[str, dict] = {
    "parakeet": {
        "encoder_config": {
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "conv_kernel_size": 15,
            "subsampling_factor": 4,
            "subsampling_conv_channels": 32,
            "dropout": 0.1,
            "attention_dropout": 0.1,
            "activation_dropout": 0.1,
            "layerdrop": 0.0,
        }
    },
    "wav2vec2": {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": [16, 16],
        "conv_kernel": [10, 3],
        "conv_stride": [5, 2],
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
    },
}


def tiny_overrides(family: str = "parakeet") -> list[str]:
    """Overrides that replace a recipe's model with a very small one of `family`."""
    if family not in TINY_MODEL_CONFIGS:
        raise ValueError(f"no tiny config for family {family!r} (have {', '.join(TINY_MODEL_CONFIGS)})")
    return [
        f"model.family={family}",
        # JSON is YAML: the whole inline config is replaced, not merged with the recipe's
        "model.config=" + json.dumps(TINY_MODEL_CONFIGS[family]),
        "train.threads=1",
        "train.max_minutes=null",
        "model.inter_ctc_weight=0",  # one layer: nothing in between (tests/test_inter_ctc.py and the distributed tests use it)
    ]


def lone_pass_texts(asr: Any, audio: Any, sr: int) -> tuple[str, str]:
    import torch

    with torch.inference_mode():
        inputs = asr.feature_extractor(audio, sampling_rate=sr, return_attention_mask=True, return_tensors="pt")
        logits = asr.model(**inputs).logits[0]
    ids = logits.argmax(-1)
    audio_ids = ids.clone()
    if hasattr(asr.model, "_get_output_attention_mask"):  # Parakeet: frames it counts as padding are blank
        frames = asr.model._get_output_attention_mask(inputs["attention_mask"], logits.shape[0])[0].bool()
        audio_ids[~frames] = asr.model.config.pad_token_id
    return asr.tokenizer.decode(ids.tolist()), asr.tokenizer.decode(audio_ids.tolist())


def parakeet_tokenizer(pieces: tuple[str, ...] = ("▁the", "▁a", "ing", "er")) -> Any:
    """A SentencePiece-style (Unigram + Metaspace) ParakeetTokenizer, built offline.

    As transformers' NeMo conversion does for CTC checkpoints, "<pad>" (the CTC blank) is added after
    the SentencePiece pieces, so it is the last id.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import ParakeetTokenizer

    vocab = [("<unk>", 0.0), ("▁", -2.0), *[(p, -1.5) for p in pieces], *[(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz'"]]
    backend = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok = ParakeetTokenizer(tokenizer_object=backend, clean_up_tokenization_spaces=False)
    tok.add_special_tokens({"pad_token": AddedToken("<pad>", normalized=False, special=True),
                            "unk_token": AddedToken("<unk>", normalized=False, special=True)})
    assert tok.pad_token_id == len(tok) - 1 == len(vocab)
    return tok


def local_wav2vec2(text: str, num_hidden_layers: int = 0, do_normalize: bool = False) -> tuple[Any, Any, Any]:
    """(model, feature extractor, tokenizer): a tiny random wav2vec 2.0 CTC model (layer-normalised convolutions,
    `num_hidden_layers` attention layers) with a character vocabulary of `text`, built offline (torch's seed)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    from pipeline.data.text import build_vocab
    from pipeline.models.asr import character_tokenizer

    tok = character_tokenizer(build_vocab([text]))
    cfg = Wav2Vec2Config(**{**TINY_MODEL_CONFIGS["wav2vec2"], "num_hidden_layers": num_hidden_layers},
                         vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=do_normalize,
                                  return_attention_mask=True)
    return Wav2Vec2ForCTC(cfg).eval(), fe, tok


def run_script_impl(script: str, *args: str, timeout: float = 300, env: dict[str, str] | None = None,
                    ) -> subprocess.CompletedProcess[str]:
    """`python scripts/SCRIPT ARGS` in its own process, output captured (in a child of a fork server that has
    torch imported already, where the environment allows: tests/_script_runner.py)."""
    return run_python([REPO / "scripts" / script, *args], timeout=timeout, env=env)


def run_python(argv: list[Any], timeout: float = 300, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    """`python ARGV` (a script and its arguments, or `-c CODE ARGS`) as `run_script` runs scripts."""
    return _script_runner.run(list(map(str, argv)), REPO, _script_env(env), timeout)


def _script_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(extra or {})}


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("speech_pipeline_cache")
    old = os.environ.get("SPEECH_PIPELINE_CACHE")
    os.environ["SPEECH_PIPELINE_CACHE"] = str(cache)
    _script_runner.start(_script_env(), REPO)
    yield cache
    _script_runner.stop()
    if old is None:
        os.environ.pop("SPEECH_PIPELINE_CACHE", None)
    else:
        os.environ["SPEECH_PIPELINE_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.synth.corpus import synthesize_corpus

    out = tmp_path_factory.mktemp("tiny_corpus") / "corpus"
    info = synthesize_corpus(out, n_train=40, n_test=12, seed=0, sample_rate=16000, progress=False)
    assert info["counts"] == {"train": 40, "test": 12}
    return out


@pytest.fixture(scope="session")
def tiny_recipe_overrides() -> Callable[..., list[str]]:
    return tiny_overrides


@pytest.fixture(scope="session")
def run_script() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_script_impl


@pytest.fixture(scope="session")
def trained_tiny_model(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained_tiny_model") / "model"
    proc = run_script_impl(
        "train.py", str(QUICKSTART), *tiny_overrides("parakeet"),
        f"output_dir={out}", f"data.train={tiny_corpus / 'train'}", f"data.eval={tiny_corpus / 'test'}",
        "train.max_steps=8", "train.batch_seconds=10", "train.learning_rate=1e-6", "train.warmup_steps=0",
        "train.save_every=4", "train.eval_every=1000", "train.log_every=2",
    )
    assert proc.returncode == 0, f"train.py failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    assert (out / "model.safetensors").is_file(), sorted(p.name for p in out.iterdir())
    return out


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    """One intra-op thread for a module of tiny models: they gain nothing from two, and on a busy machine
    OpenMP barriers stall. Use with `pytestmark = pytest.mark.usefixtures("one_thread_module")`."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
