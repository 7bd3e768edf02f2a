"""Every CTC family end to end, offline, with tiny models (issue "Conformer ASR").

For each family (wav2vec2, hubert, wavlm, wav2vec2-conformer with relative and rotary positions,
wav2vec2-bert, parakeet): `scripts/train.py` trains a few steps from an inline config, the output
directory loads in `transformers.pipeline("automatic-speech-recognition")`, and the pipeline's
transcripts are exactly `scripts/evaluate.py`'s `hypothesis_raw`. Then, from local "pretrained"
checkpoint directories: keeping the checkpoint's own tokenizer and head (`model.tokenizer=checkpoint`,
including a SentencePiece-style `ParakeetTokenizer` whose blank is the last id) or replacing them
(`model.tokenizer=characters`); a tokenizer that does not fit the head is rejected before any step;
an option a family lacks is a one-line error; the family is detected from a checkpoint's config.
Finally every recipe under recipes/ loads.

Self-contained: the corpus, the checkpoints and the cache are made here, in temporary folders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from conftest import lone_pass_texts, parakeet_tokenizer, run_python  # noqa: E402

from pipeline.config import ModelConfig, load_recipe  # noqa: E402
from pipeline.data.text import build_vocab, get_normalizer  # noqa: E402
from pipeline.errors import ModelError  # noqa: E402
from pipeline.models.asr import (  # noqa: E402
    FAMILIES,
    build_model,
    character_tokenizer,
    detect_family,
    load_feature_extractor,
)

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"

# Raw-waveform families: a 4-layer conv stack with a total stride of 320 samples (20 ms frames, as
# the real checkpoints), so the tiny transformer sees ~100 frames per utterance.
_CONV = {"conv_dim": [16, 16, 16, 16], "conv_kernel": [10, 8, 4, 4], "conv_stride": [5, 4, 4, 4],
         "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}
_TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}

# variant id -> (family, inline model.config)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "wav2vec2": ("wav2vec2", {**_TINY, **_CONV, "feat_extract_norm": "layer", "do_stable_layer_norm": True}),
    # the wav2vec2-base layout (group norm in the first conv layer): padding changes its outputs
    "wav2vec2-groupnorm": ("wav2vec2", {**_TINY, **_CONV, "feat_extract_norm": "group", "do_stable_layer_norm": False}),
    "hubert": ("hubert", {**_TINY, **_CONV, "feat_extract_norm": "layer", "do_stable_layer_norm": True}),
    "wavlm": ("wavlm", {**_TINY, **_CONV, "feat_extract_norm": "layer", "do_stable_layer_norm": True,
                        "num_buckets": 32, "max_bucket_distance": 100}),
    "wav2vec2-conformer-relative": ("wav2vec2-conformer", {**_TINY, **_CONV, "feat_extract_norm": "layer",
                                                           "conv_depthwise_kernel_size": 7,
                                                           "position_embeddings_type": "relative"}),
    "wav2vec2-conformer-rotary": ("wav2vec2-conformer", {**_TINY, **_CONV, "feat_extract_norm": "layer",
                                                         "conv_depthwise_kernel_size": 7,
                                                         "position_embeddings_type": "rotary"}),
    "wav2vec2-bert": ("wav2vec2-bert", {**_TINY, "conv_depthwise_kernel_size": 7, "feature_projection_input_dim": 160}),
    "parakeet": ("parakeet", {"encoder_config": {**_TINY, "conv_kernel_size": 7, "subsampling_factor": 4,
                                                 "subsampling_conv_channels": 16}}),
}


# ------------------------------------------------------------------------------------------------
# Helpers


def run_script(script: str, *args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run_python([REPO / "scripts" / script, *args], timeout=timeout, env=env)


def evaluate_script(*args: str) -> None:
    """scripts/evaluate.py run in this process (its `main`, as `python scripts/evaluate.py ARGS` runs it).

    In-process only to spare a Python start-up per test on a shared 2-core machine; one thread.
    """
    import runpy

    argv, threads = sys.argv, torch.get_num_threads()
    sys.argv = [str(REPO / "scripts" / "evaluate.py"), *args]
    torch.set_num_threads(1)
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:  # entry_point turns a user error into `error: ...` and exit code 2
        raise AssertionError(f"scripts/evaluate.py exited with code {exc.code}") from None
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)


def write_recipe(path: Path, corpus: Path, output_dir: Path, model: dict[str, Any], **train: Any) -> Path:
    """A small recipe in conformer_quickstart.yaml's schema: train split only (no periodic evaluation)."""
    recipe = {
        "description": "tiny test model",
        "task": "asr",
        "output_dir": str(output_dir),
        "seed": 0,
        "data": {"train": str(corpus / "train"), "min_duration": 0.0, "max_duration": 20.0},
        "model": model,
        # A tiny learning rate keeps the random model emitting characters, so that comparing two
        # inference paths is not trivially "" == "".
        "train": {"max_steps": 3, "batch_seconds": 8.0, "max_batch_size": 8, "learning_rate": 1.0e-5,
                  "warmup_steps": 0, "threads": 1, "log_every": 1, **train},
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def train(ctx: dict[str, Any], name: str, model: dict[str, Any], *overrides: str, **train_opts: Any,
          ) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = ctx["tmp"] / "runs" / name
    recipe = write_recipe(ctx["tmp"] / f"{name}.yaml", ctx["corpus"], out, model, **train_opts)
    return run_script("train.py", str(recipe), *overrides, env=ctx["env"]), out


def assert_trained(proc: subprocess.CompletedProcess[str], out: Path) -> None:
    assert proc.returncode == 0, f"train.py failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json",
                 "speech_pipeline.json", "README.md"):
        assert (out / name).is_file(), f"{name} missing from {sorted(p.name for p in out.iterdir())}"


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 2, f"expected exit code 2, got {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_nothing_trained(out: Path) -> None:
    """Rejected before the first step: no checkpoint, no log, no model."""
    if not out.exists():
        return
    for name in ("checkpoints", "train_log.jsonl", "model.safetensors", "recipe.yaml", "train_results.json"):
        assert not (out / name).exists(), f"{name} was written although the run was rejected"


def pipeline_matches_evaluate(ctx: dict[str, Any], model_dir: Path) -> list[str]:
    """scripts/evaluate.py on the test split, then transformers.pipeline on the same audio arrays.

    evaluate.py batches utterances; the pipeline runs them one at a time. Their transcripts must be the
    same, but for one documented exception (see `pipeline.evaluation.inference.output_mask`).
    """
    import transformers

    eval_dir = model_dir / "eval"
    evaluate_script("--model", str(model_dir), "--data", str(ctx["corpus"] / "test"), "--output", str(eval_dir))
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["num_utterances"] == 8 and 0.0 <= metrics["cer"] and metrics["wer"] >= 0.0, metrics
    rows = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 8

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        asr = transformers.pipeline("automatic-speech-recognition", model=str(model_dir), device="cpu")
        assert asr.type == "ctc"
        texts, lone_all, lone_audio = [], [], []
        for row in rows:
            path = Path(row["audio"])
            if not path.is_absolute():
                path = ctx["corpus"] / "test" / path
            audio, sr = sf.read(str(path), dtype="float32")
            texts.append(asr({"raw": np.asarray(audio), "sampling_rate": sr})["text"])
            every_frame, audio_frames = lone_pass_texts(asr, audio, sr)
            lone_all.append(every_frame)
            lone_audio.append(audio_frames)
    finally:
        torch.set_num_threads(threads)
    assert lone_all == texts, "the by-hand lone pass does not reproduce transformers.pipeline"
    # evaluate.py's batched transcripts are the lone passes', and the pipeline's except where it decodes a
    # frame that the model marks as padding (Parakeet: its label there depends on the batch)
    assert [r["hypothesis_raw"] for r in rows] == lone_audio
    if not hasattr(asr.model, "_get_output_attention_mask"):
        assert lone_audio == texts
    assert any(t.strip() for t in texts), "every transcript is empty: the comparison proves nothing"
    return texts


def train_texts(corpus: Path) -> list[str]:
    import csv

    normalize = get_normalizer("default")
    with open(corpus / "train" / "metadata.csv", encoding="utf-8", newline="") as f:
        return [normalize(r["text"]) for r in csv.DictReader(f)]


def head_weight(model_dir: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    state = load_file(str(model_dir / "model.safetensors"))
    key = next(k for k in ("lm_head.weight", "ctc_head.weight") if k in state)
    return state[key].reshape(state[key].shape[0], -1)


def tensor(model_dir: Path, suffix: str) -> torch.Tensor:
    from safetensors.torch import load_file

    state = load_file(str(model_dir / "model.safetensors"))
    return state[next(k for k in state if k.endswith(suffix))]


# ------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny espeak-ng corpus (24 train / 8 test utterances), a private cache, and the env for subprocesses."""
    from pipeline.synth.corpus import synthesize_corpus

    tmp = tmp_path_factory.mktemp("families")
    cache = tmp / "cache"
    env = {"SPEECH_PIPELINE_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        corpus = tmp / "corpus"
        info = synthesize_corpus(corpus, n_train=24, n_test=8, seed=3, sample_rate=16000, progress=False)
        assert info["counts"] == {"train": 24, "test": 8}
        yield {"tmp": tmp, "corpus": corpus, "env": env}


@pytest.fixture(scope="module")
def checkpoints(ctx: dict[str, Any]) -> dict[str, Path]:
    """Local "pretrained" checkpoint directories, made with save_pretrained.

    parakeet: tiny ParakeetForCTC + SentencePiece-style ParakeetTokenizer (blank = last id, 34 tokens)
              + ParakeetFeatureExtractor.
    wav2vec2: tiny Wav2Vec2ForCTC + character Wav2Vec2CTCTokenizer whose vocabulary has the same
              symbols and size as the train split's, in another order (pad first).
    parakeet-bad-size: the parakeet checkpoint with a 32-token tokenizer (its head has 34 classes).
    wav2vec2-bad-blank: the wav2vec2 checkpoint with config.pad_token_id = last id, tokenizer pad = 0.
    """
    from transformers import (
        ParakeetCTCConfig,
        ParakeetFeatureExtractor,
        ParakeetForCTC,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
    )

    root = ctx["tmp"] / "checkpoints"
    torch.manual_seed(1)
    out: dict[str, Path] = {}

    tok = parakeet_tokenizer()
    config = ParakeetCTCConfig(encoder_config=VARIANTS["parakeet"][1]["encoder_config"], vocab_size=len(tok),
                               pad_token_id=tok.pad_token_id)
    model = ParakeetForCTC(config)
    out["parakeet"] = root / "parakeet"
    model.save_pretrained(out["parakeet"])
    tok.save_pretrained(out["parakeet"])
    ParakeetFeatureExtractor().save_pretrained(out["parakeet"])

    out["parakeet-bad-size"] = root / "parakeet-bad-size"
    shutil.copytree(out["parakeet"], out["parakeet-bad-size"])
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out["parakeet-bad-size"] / name).unlink(missing_ok=True)
    parakeet_tokenizer(pieces=("▁the", "▁a")).save_pretrained(out["parakeet-bad-size"])

    chars = build_vocab(train_texts(ctx["corpus"]))  # {"<pad>": 0, "|": 1, ..., "<unk>": n-1}
    symbols = [s for s in chars if s != "<pad>"]
    reordered = {"<pad>": 0, **{s: i for i, s in enumerate(reversed(symbols), start=1)}}
    assert set(reordered) == set(chars) and reordered != chars
    w_tok = character_tokenizer(reordered)
    w_config = Wav2Vec2Config(**VARIANTS["wav2vec2"][1], vocab_size=len(w_tok), pad_token_id=0)
    w_model = Wav2Vec2ForCTC(w_config)
    out["wav2vec2"] = root / "wav2vec2"
    w_model.save_pretrained(out["wav2vec2"])
    w_tok.save_pretrained(out["wav2vec2"])
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(out["wav2vec2"])

    out["wav2vec2-bad-blank"] = root / "wav2vec2-bad-blank"
    shutil.copytree(out["wav2vec2"], out["wav2vec2-bad-blank"])
    bad = json.loads((out["wav2vec2-bad-blank"] / "config.json").read_text(encoding="utf-8"))
    bad["pad_token_id"] = len(w_tok) - 1
    (out["wav2vec2-bad-blank"] / "config.json").write_text(json.dumps(bad, indent=2), encoding="utf-8")
    return out


# ------------------------------------------------------------------------------------------------
# Every family: train -> evaluate -> transformers.pipeline


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_family_trains_and_pipeline_matches_evaluate(ctx: dict[str, Any], variant: str) -> None:
    family, config = VARIANTS[variant]
    proc, out = train(ctx, variant, {"family": family, "config": config})
    assert_trained(proc, out)
    meta = json.loads((out / "speech_pipeline.json").read_text(encoding="utf-8"))
    assert meta["family"] == family
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert saved["model_type"] == FAMILIES[family].model_types[0]
    if family == "wav2vec2-conformer":
        assert saved["position_embeddings_type"] == config["position_embeddings_type"]
    # the blank is the tokenizer's pad, first for wav2vec2-style families and last for Parakeet
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    assert saved["vocab_size"] == len(vocab)
    assert saved["pad_token_id"] == vocab["<pad>"] == (len(vocab) - 1 if FAMILIES[family].blank_last else 0)
    pipeline_matches_evaluate(ctx, out)


# ------------------------------------------------------------------------------------------------
# Checkpoints: keep the tokenizer and head, or replace them


@pytest.mark.parametrize("name", ["parakeet", "wav2vec2"])
def test_checkpoint_tokenizer_is_kept(ctx: dict[str, Any], checkpoints: dict[str, Path], name: str) -> None:
    from transformers import AutoTokenizer

    ckpt = checkpoints[name]
    proc, out = train(ctx, f"keep-{name}", {"family": "auto", "name_or_path": str(ckpt), "tokenizer": "checkpoint"},
                      max_steps=2, learning_rate=1.0e-6)
    assert_trained(proc, out)
    assert json.loads((out / "speech_pipeline.json").read_text(encoding="utf-8"))["family"] == name  # detected
    before, after = AutoTokenizer.from_pretrained(str(ckpt)), AutoTokenizer.from_pretrained(str(out))
    assert type(after) is type(before)
    assert after.get_vocab() == before.get_vocab() and after.pad_token_id == before.pad_token_id
    c_before = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    c_after = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert (c_after["vocab_size"], c_after["pad_token_id"]) == (c_before["vocab_size"], c_before["pad_token_id"])
    h_before, h_after = head_weight(ckpt), head_weight(out)
    assert h_after.shape == h_before.shape == (len(before), h_before.shape[1])
    # the checkpoint's head was fine-tuned (2 steps at lr 1e-6), not re-initialised
    assert torch.allclose(h_after, h_before, atol=1e-3)
    texts = pipeline_matches_evaluate(ctx, out)
    if name == "parakeet":  # decoded by the SentencePiece-style tokenizer: no "|" word delimiter in the text
        assert not any("|" in t for t in texts)


@pytest.mark.parametrize("name", ["parakeet", "wav2vec2"])
def test_checkpoint_with_new_character_vocabulary(ctx: dict[str, Any], checkpoints: dict[str, Path], name: str) -> None:
    from transformers import AutoTokenizer

    ckpt = checkpoints[name]
    family = FAMILIES[name]
    # max_steps=0: the saved weights are exactly those build_model made from the checkpoint
    proc, out = train(ctx, f"chars-{name}", {"family": "auto", "name_or_path": str(ckpt), "tokenizer": "characters"},
                      max_steps=0)
    assert_trained(proc, out)
    expected = build_vocab(train_texts(ctx["corpus"]), blank_last=family.blank_last)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.get_vocab() == expected
    assert tok.pad_token_id == (len(expected) - 1 if family.blank_last else 0)
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert (saved["vocab_size"], saved["pad_token_id"]) == (len(expected), tok.pad_token_id)
    h_before, h_after = head_weight(ckpt), head_weight(out)
    assert h_after.shape[0] == len(expected)
    if name == "parakeet":
        assert h_before.shape[0] != h_after.shape[0]  # 34 SentencePiece-style tokens -> the train split's characters
        encoder = "encoder.layers.0.feed_forward1.linear1.weight"
    else:  # same size as the checkpoint's head, other symbols: the head is new all the same
        assert h_before.shape == h_after.shape
        assert not torch.allclose(h_after, h_before, atol=1e-3)
        encoder = "encoder.layers.0.feed_forward.intermediate_dense.weight"
    assert torch.equal(tensor(out, encoder), tensor(ckpt, encoder)), "the encoder must come from the checkpoint"


# ------------------------------------------------------------------------------------------------
# Subword vocabularies learned from the train split


@pytest.mark.parametrize("name", ["parakeet", "wav2vec2"])
def test_subword_vocabulary_trains_and_pipeline_matches_evaluate(ctx: dict[str, Any], name: str) -> None:
    from transformers import AutoTokenizer, ParakeetTokenizer

    family, config = VARIANTS[name]
    proc, out = train(ctx, f"subwords-{name}", {"family": family, "config": config, "tokenizer": "subwords",
                                                "vocab_size": 48})
    assert_trained(proc, out)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert isinstance(tok, ParakeetTokenizer) and len(tok) == 48
    assert tok.pad_token_id == (47 if FAMILIES[family].blank_last else 0)
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert (saved["vocab_size"], saved["pad_token_id"]) == (48, tok.pad_token_id)
    assert head_weight(out).shape[0] == 48
    # learned from the train text: it has merges (pieces longer than a character) and spells every transcript
    pieces = [t for t in tok.get_vocab() if t not in ("<pad>", "<unk>")]
    assert any(len(t.lstrip("▁")) > 1 for t in pieces)
    for text in train_texts(ctx["corpus"]):
        ids = tok(text).input_ids
        assert tok.unk_token_id not in ids and tok.decode(ids, group_tokens=False) == text
    texts = pipeline_matches_evaluate(ctx, out)
    assert not any("|" in t or "▁" in t for t in texts)


def test_subword_tokenizer_is_deterministic_and_decodes_ctc() -> None:
    from pipeline.models.asr import subword_tokenizer

    texts = ["the cat sat on the mat", "a cat and a hat", "the hat on the cat"] * 3
    a = subword_tokenizer(texts, 30, blank_last=True)
    b = subword_tokenizer(list(reversed(texts)), 30, blank_last=True)
    assert a.get_vocab() == b.get_vocab() and len(a) == 30 and a.pad_token_id == 29
    ids = a("the cat").input_ids
    blank = a.pad_token_id
    # CTC frames: repeats merged, blanks dropped, a blank between two equal pieces keeps both
    frames = [blank, ids[0], ids[0], blank, *ids[1:], ids[-1], blank]
    assert a.decode(frames) == "the cat"
    assert a.decode([ids[-1], blank, ids[-1]]) == a.decode([ids[-1], ids[-1]], group_tokens=False) != a.decode(ids[-1:])
    first = subword_tokenizer(texts, 30)
    assert first.pad_token_id == 0 and len(first) == 30
    with pytest.raises(ModelError, match="model.vocab_size: 5 is smaller"):
        subword_tokenizer(texts, 5)


def test_pretrained_only_checkpoint_gets_a_head(tmp_path: Path) -> None:
    """Like facebook/wav2vec2-conformer-rope-large: encoder weights only, config.vocab_size unset."""
    from transformers import Wav2Vec2ConformerConfig, Wav2Vec2ConformerModel

    from pipeline.models.asr import output_size, preflight

    config = Wav2Vec2ConformerConfig(**VARIANTS["wav2vec2-conformer-rotary"][1])
    assert config.vocab_size is None
    torch.manual_seed(0)
    Wav2Vec2ConformerModel(config).save_pretrained(tmp_path)
    tok = character_tokenizer(build_vocab(["abc"]))
    tok.save_pretrained(tmp_path)
    for keep in (False, True):  # model.tokenizer=characters, and =checkpoint with the directory's tokenizer
        cfg = ModelConfig(name_or_path=str(tmp_path), tokenizer="checkpoint" if keep else "characters")
        family = detect_family(cfg)
        assert family.name == "wav2vec2-conformer"
        model = build_model(family, cfg, tok, keep_head=keep)
        preflight(model, tok)
        assert output_size(model) == len(tok) and model.config.pad_token_id == tok.pad_token_id == 0
        # freeze_feature_encoder is on by default for checkpoints of families that have one
        assert not any(p.requires_grad for p in model.wav2vec2_conformer.feature_extractor.parameters())


# ------------------------------------------------------------------------------------------------
# Rejected before training


@pytest.mark.parametrize(("name", "fragments"), [
    ("parakeet-bad-size", ("the output layer has 34 classes but the tokenizer has 32 tokens",)),
    ("wav2vec2-bad-blank", ("the tokenizer's pad token id is 0", "CTC blank")),
])
def test_mismatched_checkpoint_tokenizer_is_rejected(ctx: dict[str, Any], checkpoints: dict[str, Path], name: str,
                                                     fragments: tuple[str, ...]) -> None:
    proc, out = train(ctx, f"reject-{name}", {"name_or_path": str(checkpoints[name]), "tokenizer": "checkpoint"})
    line = assert_one_line_error(proc, *fragments)
    assert str(checkpoints[name]) in line  # names the checkpoint
    assert_nothing_trained(out)


def test_unsupported_option_is_a_clear_error(ctx: dict[str, Any]) -> None:
    proc, out = train(ctx, "parakeet-freeze", {"family": "parakeet", "config": VARIANTS["parakeet"][1],
                                               "freeze_feature_encoder": True})
    assert_one_line_error(proc, "model.freeze_feature_encoder", "parakeet")
    assert_nothing_trained(out)


def test_freeze_feature_encoder_support_per_family() -> None:
    tok = character_tokenizer(build_vocab(["abc"]))
    for variant, (family, config) in VARIANTS.items():
        cfg = ModelConfig(family=family, config=config, freeze_feature_encoder=True)
        if FAMILIES[family].can_freeze_feature_encoder:
            model = build_model(FAMILIES[family], cfg, tok, keep_head=False)
            frozen = [p.requires_grad for n, p in model.named_parameters() if "feature_extractor" in n]
            assert frozen and not any(frozen), variant
        else:
            with pytest.raises(ModelError, match="freeze_feature_encoder"):
                build_model(FAMILIES[family], cfg, tok, keep_head=False)


# ------------------------------------------------------------------------------------------------
# Family detection


@pytest.mark.parametrize("variant", ["wav2vec2", "hubert", "wavlm", "wav2vec2-conformer-rotary", "wav2vec2-bert",
                                     "parakeet"])
def test_family_is_detected_from_checkpoint_config(tmp_path: Path, variant: str) -> None:
    family, config = VARIANTS[variant]
    FAMILIES[family].config_cls()(**config, vocab_size=10, pad_token_id=0).save_pretrained(tmp_path)
    assert detect_family(ModelConfig(name_or_path=str(tmp_path))).name == family
    # an explicit family wins over the checkpoint's
    assert detect_family(ModelConfig(family="hubert", name_or_path=str(tmp_path))).name == "hubert"


def test_recipe_front_end_overrides_apply_on_top_of_a_checkpoint(tmp_path: Path) -> None:
    """An 8 kHz front-end for telephone-band audio, on a 16 kHz checkpoint: the override wins, the rest is kept."""
    from transformers import ParakeetFeatureExtractor

    ParakeetFeatureExtractor(preemphasis=0.9).save_pretrained(tmp_path)
    family = FAMILIES["parakeet"]
    kept = load_feature_extractor(family, ModelConfig(name_or_path=str(tmp_path)))
    assert (kept.sampling_rate, kept.n_fft, kept.preemphasis) == (16000, 512, 0.9)
    fe = load_feature_extractor(family, ModelConfig(name_or_path=str(tmp_path), feature_extractor={
        "sampling_rate": 8000, "n_fft": 256, "win_length": 200, "hop_length": 80}))
    assert (fe.sampling_rate, fe.n_fft, fe.hop_length, fe.preemphasis) == (8000, 256, 80, 0.9)
    # the mel filters are rebuilt for the new rate: 129 FFT bins, none of the 80 filters empty
    assert tuple(fe.mel_filters.shape) == (80, 129) and bool((fe.mel_filters.sum(1) > 0).all())
    one_second = fe(np.zeros(8000, dtype=np.float32), sampling_rate=8000, return_tensors="np")["input_features"]
    assert one_second.shape[1] == 101  # 10 ms hop at 8 kHz, as at 16 kHz


def test_family_detection_errors(tmp_path: Path) -> None:
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="'bert' is not a supported CTC family"):
        detect_family(ModelConfig(name_or_path=str(tmp_path)))
    with pytest.raises(ModelError, match="model.family: set it"):
        detect_family(ModelConfig(config={"hidden_size": 32}))
    with pytest.raises(ModelError, match="unknown family 'conformer'"):
        detect_family(ModelConfig(family="conformer", config={}))


# ------------------------------------------------------------------------------------------------
# Recipes


def _recipe_files() -> list[Path]:
    return sorted(p for p in RECIPES.rglob("*.yaml") if p.relative_to(RECIPES).parts[0] != "accelerate")


@pytest.mark.parametrize("path", _recipe_files(), ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_recipe_loads(path: Path) -> None:
    recipe = load_recipe(path)
    if recipe.task != "asr":
        return
    m = recipe.model
    assert m.family == "auto" or m.family in FAMILIES, m.family
    if m.config is not None:  # an inline architecture must be a valid config of its family
        FAMILIES[m.family].config_cls()(**m.config, vocab_size=32, pad_token_id=0)


def test_family_recipes_are_consistent() -> None:
    """The real recipes name the checkpoints and options the docs promise (they cannot run offline)."""
    base = load_recipe(RECIPES / "asr" / "wav2vec2_base_librispeech_100h.yaml")
    assert base.model.name_or_path == "facebook/wav2vec2-base" and base.model.family in ("auto", "wav2vec2")
    assert (base.data.train.path, base.data.train.config, base.data.train.split) == ("openslr/librispeech_asr", "clean",
                                                                                   "train.100")
    assert base.model.freeze_feature_encoder is True and base.model.mask_time_prob == 0.05
    assert 1e-4 <= base.train.learning_rate <= 3e-4 and base.train.mixed_precision == "bf16"

    conf = load_recipe(RECIPES / "asr" / "wav2vec2_conformer_librispeech_100h.yaml")
    assert conf.model.name_or_path == "facebook/wav2vec2-conformer-rope-large"
    assert conf.model.tokenizer == "characters"

    para = load_recipe(RECIPES / "asr" / "parakeet_ctc_custom.yaml")
    assert para.model.name_or_path == "nvidia/parakeet-ctc-0.6b" and para.model.tokenizer == "checkpoint"
    assert not para.model.freeze_feature_encoder  # parakeet has no convolutional feature encoder to freeze
    assert para.train.learning_rate < base.train.learning_rate


def test_wav2vec2_quickstart_is_a_fair_peer_of_the_conformer_one() -> None:
    w2v = load_recipe(RECIPES / "asr" / "wav2vec2_quickstart.yaml")
    conf = load_recipe(RECIPES / "asr" / "conformer_quickstart.yaml")
    assert (w2v.data.train, w2v.data.eval) == (conf.data.train, conf.data.eval)
    assert w2v.train.max_minutes == conf.train.max_minutes  # equal CPU minutes
    c = w2v.model.config
    assert w2v.model.family == "wav2vec2" and c["feat_extract_norm"] == "layer" and c["do_stable_layer_norm"] is True
    assert int(np.prod(c["conv_stride"])) == 320  # 20 ms frames at 16 kHz
    tok = character_tokenizer(build_vocab(["abcdefghijklmnopqrstuvwxyz'"]))
    sizes = {}
    for name, recipe in (("wav2vec2", w2v), ("conformer", conf)):
        family = FAMILIES[recipe.model.family]
        t = character_tokenizer(build_vocab(["abcdefghijklmnopqrstuvwxyz'"], blank_last=family.blank_last))
        model = build_model(family, recipe.model, t if family.blank_last else tok, keep_head=False)
        sizes[name] = sum(p.numel() for p in model.parameters())
    assert 2.5e6 <= sizes["wav2vec2"] <= 5e6, sizes
    assert 0.7 <= sizes["wav2vec2"] / sizes["conformer"] <= 1.4, sizes
