"""Text-to-speech: espeak phonemes and durations, the FastSpeech2Conformer task through the shared loop,
scripts/synthesize.py end to end, and refusal of an acoustic model / vocoder pair with different mels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from accelerate import Accelerator

from pipeline.errors import ModelError, RecipeError
from pipeline.tts.mel import get_mel_config
from pipeline.tts.phonemes import SIL, PhonemeVocab, frame_durations, synthetic_alignments, text_to_phonemes

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "tts" / "quickstart.yaml"


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def tts_corpus(tmp_path_factory: pytest.TempPathFactory, run_script) -> Path:
    """Made by the script in a fresh process, as users make corpora: espeak's output depends on the calls
    its process made before, and the alignment replays a fresh writer process."""
    out = tmp_path_factory.mktemp("tts_corpus") / "corpus"
    proc = run_script("synth_corpus.py", out, "--train", "12", "--test", "3", "--seed", "3", "--quiet", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _train_tiny(tts_corpus: Path, out: Path, steps: int, *overrides: str) -> Path:
    """The quickstart recipe with the tiny preset on the test corpus, trained in this process."""
    from pipeline.config import load_recipe
    from pipeline.training.loop import run_training

    recipe = load_recipe(QUICKSTART, [
        f"output_dir={out}", f"data.train={tts_corpus / 'train'}", f"data.eval={tts_corpus / 'test'}",
        "model.config={preset: tiny}", f"train.max_steps={steps}", "train.max_minutes=null", "train.warmup_steps=0",
        "train.batch_seconds=8", "train.log_every=4", "train.eval_every=0", "train.save_every=1000", "train.threads=1",
        "acoustic.stats_utterances=6", *overrides,
    ])
    run_training(recipe)
    return out


@pytest.fixture(scope="module")
def trained(tts_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train_tiny(tts_corpus, tmp_path_factory.mktemp("tts_model") / "acoustic", 16)


def _tiny_vocoder(path: Path, preset: str) -> Path:
    from pipeline.tts.diffwave import DiffWave, model_kwargs
    from pipeline.tts.inference import Vocoder

    mel = get_mel_config(preset)
    kwargs = model_kwargs({"preset": "tiny"})
    kwargs.update(n_mels=mel.n_mels, hop_length=mel.hop_length)
    torch.manual_seed(0)
    Vocoder(DiffWave(**kwargs), mel).save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------------
def test_phonemes_and_vocabulary(tmp_path: Path) -> None:
    phonemes = text_to_phonemes("Hello world.", "en-us")
    assert phonemes[0] == SIL and phonemes[-1] == SIL
    assert {"h", "l", "w"} <= set(phonemes) and any("oU" in p for p in phonemes)  # stress marks stay on the vowel
    vocab = PhonemeVocab.build([phonemes])
    assert vocab.encode(["h", "not-a-phoneme"]) == [vocab.index["h"], vocab.index["<unk>"]]
    assert vocab.pad_id == 0
    vocab.save(tmp_path)
    assert PhonemeVocab.load(tmp_path).tokens == vocab.tokens


def test_frame_durations_sum_to_frames() -> None:
    for preset in ("speecht5", "ljspeech"):
        mel = get_mel_config(preset)
        for n in (1, 255, 256, 257, 10_000, 33_017):
            starts = sorted({0, *np.linspace(0, n, 7).astype(int).tolist()[1:-1]})
            d = frame_durations(starts, n, mel)
            assert sum(d) == mel.frames(n) and min(d) >= 0 and len(d) == len(starts)
    mel = get_mel_config("speecht5")  # centred frames: frame k belongs to the unit holding sample k * 256
    assert frame_durations([0, 256, 600], 1024, mel) == [1, 2, 2]


def test_synthetic_alignments(tts_corpus: Path, tmp_path: Path) -> None:
    from pipeline.evaluation.evaluate import default_cache_dir

    spans = synthetic_alignments(tts_corpus / "train", default_cache_dir())  # the training run reuses it
    assert len(spans) == 12
    good = {k: v for k, v in spans.items() if v}
    assert len(good) >= 10  # espeak is not bit-reproducible: a few may be skipped, never most
    mel = get_mel_config("speecht5")
    for name, s in good.items():
        n = sf.info(str(tts_corpus / "train" / name)).frames
        assert s[0] == (SIL, 0, 1600) and s[-1][0] == SIL and s[-1][2] == n  # PAD_SECONDS of silence at each end
        assert all(a[2] <= b[1] for a, b in zip(s[:-1], s[1:], strict=True))
        assert sum(frame_durations([x[1] for x in s], n, mel)) == mel.frames(n)
    assert synthetic_alignments(tts_corpus / "train", default_cache_dir()) == spans  # cached
    with pytest.raises(Exception, match="ctc"):
        synthetic_alignments(tmp_path, tmp_path)


def test_acoustic_model_trains(trained: Path) -> None:
    log = [json.loads(x) for x in (trained / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert {"mel_l1", "duration_mse", "pitch_mse", "energy_mse"} <= set(log[0])
    assert {"model.safetensors", "config.json", "phonemes.json", "mel_config.json", "acoustic.json"} <= {p.name for p in trained.iterdir()}
    assert not list(trained.glob("*.bin"))
    assert json.loads((trained / "mel_config.json").read_text())["name"] == "speecht5"


def test_synthesize_end_to_end(trained: Path, tmp_path: Path, run_script) -> None:
    voc = _tiny_vocoder(tmp_path / "vocoder", "speecht5")
    (tmp_path / "lines.txt").write_text("Hello there.\nA second, longer line of text.\n", encoding="utf-8")
    proc = run_script("synthesize.py", "--acoustic", trained, "--vocoder", voc, "--text-file", tmp_path / "lines.txt",
                      "--output-dir", tmp_path / "out", "--sampler", "ddim", "--steps", "2", "--speaking-rate", "1.2",
                      "--threads", "1", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("0000.wav", "0001.wav"):
        audio, sr = sf.read(str(tmp_path / "out" / name))
        assert sr == 16000 and len(audio) > 0 and np.isfinite(audio).all()
    assert not (tmp_path / "out" / "0002.wav").exists()


def test_speaking_rate_and_mismatched_presets(trained: Path, tmp_path: Path) -> None:
    from pipeline.tts.acoustic import AcousticModel, TextToSpeech
    from pipeline.tts.inference import Vocoder

    acoustic = AcousticModel.from_pretrained(trained)
    normal = acoustic.mel("Hello there, how are you today?")
    fast = acoustic.mel("Hello there, how are you today?", speaking_rate=2.0)
    assert normal.shape[0] == 80 and fast.shape[1] <= normal.shape[1]
    assert float(normal.min()) >= get_mel_config("speecht5").log_floor
    wrong = Vocoder.from_pretrained(_tiny_vocoder(tmp_path / "lj", "ljspeech"))
    with pytest.raises(ModelError, match="do not fit together.*ljspeech"):
        TextToSpeech(acoustic, wrong)


@pytest.fixture(scope="module")
def trained_speakers(tts_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train_tiny(tts_corpus, tmp_path_factory.mktemp("tts_speakers") / "acoustic", 8, "acoustic.speakers=true")


def _kept_speakers(split: Path, model_dir: Path) -> list[str]:
    """Speaker of every training row the model was trained on (data_report.json lists those skipped)."""
    import csv

    report = json.loads((model_dir / "data_report.json").read_text(encoding="utf-8"))
    skipped = {r["row"] for r in report["skipped"] if r["split"] == "train"}
    with open(split / "metadata.csv", encoding="utf-8", newline="") as f:
        return [r["speaker"] for i, r in enumerate(csv.DictReader(f), 1) if i not in skipped]


def test_multi_speaker_model(trained_speakers: Path, trained: Path, tts_corpus: Path) -> None:
    from collections import Counter

    from pipeline.tts.acoustic import AcousticModel

    train_speakers = _kept_speakers(tts_corpus / "train", trained_speakers)
    saved = json.loads((trained_speakers / "speakers.json").read_text(encoding="utf-8"))
    assert saved["speakers"] == ["<unknown>", *sorted(set(train_speakers))] and len(saved["speakers"]) > 3
    counts = Counter(train_speakers)
    assert saved["default"] == min(counts, key=lambda n: (-counts[n], n))  # the most frequent, then by name
    config = json.loads((trained_speakers / "config.json").read_text(encoding="utf-8"))
    assert config["num_speakers"] == len(saved["speakers"])
    assert not (trained / "speakers.json").exists()

    model = AcousticModel.from_pretrained(trained_speakers)
    text = "Hello there, how are you today?"
    a = model.mel(text, speaker=saved["speakers"][1])
    b = model.mel(text, speaker=saved["speakers"][2])
    assert a.shape[0] == 80 and not torch.equal(a, b)  # the embedding reaches the output
    assert torch.equal(model.mel(text), model.mel(text, speaker=saved["default"]))
    with pytest.raises(ModelError, match="'nobody': not one of the model's"):
        model.mel(text, speaker="nobody")
    with pytest.raises(ModelError, match="single voice"):
        AcousticModel.from_pretrained(trained).mel(text, speaker=saved["speakers"][1])


def test_speaker_ids_in_batches(tts_corpus: Path, tmp_path: Path) -> None:
    """Training rows carry their speaker's id, but for a fixed tenth read as <unknown> (id 0) so that the
    average voice is learnt; evaluation voices unseen in training are <unknown>."""
    from pipeline.config import load_recipe
    from pipeline.tasks import build_task

    recipe = load_recipe(QUICKSTART, [
        f"output_dir={tmp_path / 'out'}", f"data.train={tts_corpus / 'train'}", f"data.eval={tts_corpus / 'test'}",
        "model.config={preset: tiny}", "acoustic.stats_utterances=4", "acoustic.speakers=true",
    ])
    task = build_task(recipe)
    task.setup(Accelerator(cpu=True))
    n = len(task.train_rows)
    ids = task.collate([task.train_example(i) for i in range(n)])["speaker_ids"][:, 0].tolist()
    for i, sid in enumerate(ids):
        assert sid == 0 or task.speakers[sid] == task.train_rows[i]["speaker"]
    assert ids == task.collate([task.train_example(i) for i in range(n)])["speaker_ids"][:, 0].tolist()  # fixed
    unknown = [task._speaker_id("train", i, "x") == 0 and task._speaker_id("train", i, task.speakers[1]) == 0
               for i in range(1000)]
    assert 60 <= sum(unknown) <= 140  # about a tenth, by index
    eval_ids = [task.collate([{"split": "eval", "index": i}])["speaker_ids"].item() for i in range(len(task.eval_rows))]
    assert eval_ids == [0] * len(task.eval_rows)  # test voices are disjoint from training ones


def test_speaker_options_are_checked(tts_corpus: Path, tmp_path: Path) -> None:
    from pipeline.config import load_recipe
    from pipeline.tasks import build_task

    def setup(*overrides: str) -> None:
        recipe = load_recipe(QUICKSTART, [
            f"output_dir={tmp_path / 'out'}", f"data.train={tts_corpus / 'train'}", "data.eval=null",
            "model.config={preset: tiny}", "acoustic.stats_utterances=2", *overrides])
        build_task(recipe).setup(Accelerator(cpu=True))

    with pytest.raises(RecipeError, match="acoustic.speaker: 'nobody' is not a training speaker"):
        setup("acoustic.speakers=true", "acoustic.speaker=nobody")
    with pytest.raises(RecipeError, match="model.config.num_speakers: set by the toolkit"):
        setup("acoustic.speakers=true", "model.config={preset: tiny, num_speakers: 3}")


def test_continuing_a_multi_speaker_model(trained_speakers: Path, tts_corpus: Path, tmp_path: Path) -> None:
    """Its speakers come with it (ids unchanged); the recipe must agree that the model has speakers."""
    from pipeline.config import load_recipe
    from pipeline.tasks import build_task

    def task(*overrides: str):  # noqa: ANN202
        recipe = load_recipe(QUICKSTART, [
            f"output_dir={tmp_path / 'out'}", f"data.train={tts_corpus / 'test'}", "data.eval=null",
            f"model.name_or_path={trained_speakers}", *overrides])
        t = build_task(recipe)
        t.setup(Accelerator(cpu=True))
        return t

    saved = json.loads((trained_speakers / "speakers.json").read_text(encoding="utf-8"))
    t = task("acoustic.speakers=true")  # the test split's voices are none of the model's
    assert t.speakers == saved["speakers"] and t.default_speaker == saved["default"]
    assert {t._speaker_id("train", i, r["speaker"]) for i, r in enumerate(t.train_rows)} == {0}
    with pytest.raises(ModelError, match="acoustic.speakers=false but the model was trained with speaker embeddings"):
        task()


def test_ljspeech_recipe_aligns_with_ctc_and_ctc_needs_an_aligner() -> None:
    from pipeline.config import load_recipe
    from pipeline.tasks import build_task

    recipe = load_recipe(REPO / "recipes" / "tts" / "fastspeech2conformer_ljspeech.yaml")
    assert recipe.acoustic.mel == "ljspeech" and recipe.acoustic.durations == "ctc" and recipe.acoustic.aligner
    recipe = load_recipe(REPO / "recipes" / "tts" / "fastspeech2conformer_ljspeech.yaml", ["acoustic.aligner=null"])
    with pytest.raises(RecipeError, match="acoustic.aligner"):
        build_task(recipe).setup(None)  # refused before any data is touched


# ------------------------------------------------------------------------------------------------
# CTC forced-alignment durations (recorded speech)
def test_ctc_word_starts_and_proportional_phonemes() -> None:
    from pipeline.synth import espeak
    from pipeline.tts.alignment import distribute, group_by_word, word_starts

    # blank 3, word delimiter 0, "a" 1, "b" 2: "a" spoken at frame 2, "|" at 4, "b" at frames 7-8
    log_probs = torch.full((10, 4), -20.0)
    log_probs[:, 3] = 0.0
    for frame, token in ((2, 1), (4, 0), (7, 2), (8, 2)):
        log_probs[frame] = -20.0
        log_probs[frame, token] = 0.0
    assert word_starts(log_probs, [1, 0, 2], blank=3, delimiter=0) == ([2, 7], 9)
    # espeak's own words: each phoneme goes to the word it is spoken in
    syn = espeak.synthesize("their water would", "en-us")
    groups = group_by_word(syn.phonemes, syn.words)
    assert [[p for p, _, _ in g] for g in groups][0] == ["D", "e@"] and len(groups) == 3
    assert [p for g in groups for p, _, _ in g] == text_to_phonemes("their water would")[1:-1]
    spans = distribute([[("a", 0, 10), ("b", 10, 40)], [("c", 0, 5)]], [100, 200, 300])
    assert spans == [("a", 100, 125), ("b", 125, 200), ("c", 200, 300)]  # 10 : 30 of the first word


def test_ctc_aligner_on_recordings(tts_corpus: Path, trained_tiny_model: Path) -> None:
    from pipeline.audio import read_audio
    from pipeline.tts.alignment import CTCAligner

    aligner = CTCAligner(str(trained_tiny_model))
    rows = [r.split(",") for r in (tts_corpus / "test" / "metadata.csv").read_text().splitlines()[1:]]
    mel = get_mel_config("speecht5")
    for name, text, _ in rows:
        audio = read_audio(str(tts_corpus / "test" / name), 16000)[0]
        spans = aligner.align(audio, 16000, text)
        assert not isinstance(spans, str), spans
        assert [p for p, _, _ in spans] == text_to_phonemes(text)  # what inference will read
        assert spans[0][1] == 0 and spans[-1][2] == len(audio)
        assert all(a[1] <= a[2] == b[1] <= b[2] for a, b in zip(spans[:-1], spans[1:], strict=True))
        assert sum(frame_durations([x[1] for x in spans], len(audio), mel)) == mel.frames(len(audio))
    audio = read_audio(str(tts_corpus / "test" / rows[0][0]), 16000)[0]
    assert aligner.align(audio, 16000, "ωμέγα") == "characters the aligner cannot spell"
    assert aligner.align(audio[:800], 16000, rows[0][1]) == "too short for its transcript"


def test_alignment_errors_against_espeak_truth(tts_corpus: Path, trained_tiny_model: Path, tmp_path: Path,
                                               run_script) -> None:
    out = tmp_path / "align.json"
    proc = run_script("evaluate_alignment.py", "--aligner", str(trained_tiny_model), "--data", str(tts_corpus / "train"),
                      "--output", str(out), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["utterances"] == 12
    assert r["compared"] + r["other phonemes"] + r["no true durations"] + sum(r["skipped"].values()) == 12
    assert r["compared"] >= 8 and r["boundaries"] > 10 * r["compared"]  # en-us voices: the same phonemes
    assert 0 <= r["median_ms"] <= r["p90_ms"] and 0 <= r["within_20ms"] <= r["within_40ms"] <= 1


def test_acoustic_model_trains_on_ctc_durations(tts_corpus: Path, trained_tiny_model: Path, tmp_path: Path) -> None:
    out = _train_tiny(tts_corpus, tmp_path / "ctc", 3, "acoustic.durations=ctc", f"acoustic.aligner={trained_tiny_model}")
    report = json.loads((out / "data_report.json").read_text())
    assert report["splits"]["train"]["kept"] >= 10  # the aligner spells the corpus' words: nearly all aligned
    from pipeline.evaluation.evaluate import default_cache_dir

    cached = sorted((Path(default_cache_dir()) / "tts_alignments").glob("ctc-*.json"), key=lambda p: p.stat().st_mtime)
    sizes = {len(json.loads(p.read_text())) for p in cached[-2:]}  # the train and eval splits, stored for later runs
    assert sizes == {12, 3}
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r][-1] == 3 and all(np.isfinite(r["loss"]) for r in log if "loss" in r)


# ------------------------------------------------------------------------------------------------
def test_dtw_l1() -> None:
    from pipeline.tts.roundtrip import dtw_l1

    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 4))
    assert dtw_l1(a, a) == 0.0
    assert dtw_l1(a, np.repeat(a, 2, axis=0)) == 0.0  # the same content spoken twice as slowly
    assert dtw_l1(a, a + 1.0) == pytest.approx(1.0)
    unrelated = rng.normal(size=(35, 4))
    stretched = np.repeat(a, 2, axis=0)[:35] + rng.normal(scale=0.05, size=(35, 4))
    assert dtw_l1(a, stretched) < 0.2 * dtw_l1(a, unrelated)


def _dtw_l1_loop(a: np.ndarray, b: np.ndarray) -> float:
    """The former pure-Python double loop of dtw_l1, kept as the reference for the vectorised one."""
    cost = np.abs(a[:, None, :] - b[None, :, :]).mean(-1)
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    steps = np.zeros((n + 1, m + 1), dtype=np.int64)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            options = (acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
            k = int(np.argmin(options))
            prev = ((i - 1, j - 1), (i - 1, j), (i, j - 1))[k]
            acc[i, j] = cost[i - 1, j - 1] + options[k]
            steps[i, j] = steps[prev] + 1
    return float(acc[n, m] / steps[n, m])


@pytest.mark.parametrize(("n", "m"), [(1, 1), (1, 9), (9, 1), (7, 7), (13, 29), (40, 17)])
def test_dtw_l1_matches_the_loop(n: int, m: int) -> None:
    from pipeline.tts.roundtrip import dtw_l1

    rng = np.random.default_rng(n * 100 + m)
    a, b = rng.normal(size=(n, 8)).astype(np.float32), rng.normal(size=(m, 8)).astype(np.float32)
    assert dtw_l1(a, b) == pytest.approx(_dtw_l1_loop(a, b), rel=1e-9, abs=1e-12)
    # small integers: many equal costs, so the tie order (diagonal, up, left) decides the path length
    a, b = rng.integers(0, 2, size=(n, 2)).astype(float), rng.integers(0, 2, size=(m, 2)).astype(float)
    assert dtw_l1(a, b) == pytest.approx(_dtw_l1_loop(a, b), rel=1e-9, abs=1e-12)


def _tiny_asr(path: Path, texts: list[str]) -> Path:
    """An untrained tiny Parakeet CTC model directory with a character vocabulary: real loading, real decoding."""
    from transformers import ParakeetCTCConfig, ParakeetFeatureExtractor, ParakeetForCTC

    from pipeline.data.text import build_vocab
    from pipeline.models.asr import character_tokenizer

    tok = character_tokenizer(build_vocab(texts, blank_last=True))
    enc = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
           "conv_kernel_size": 7, "subsampling_factor": 4, "subsampling_conv_channels": 8}
    torch.manual_seed(0)
    ParakeetForCTC(ParakeetCTCConfig(encoder_config=enc, vocab_size=len(tok), pad_token_id=tok.pad_token_id)).save_pretrained(path)
    tok.save_pretrained(path)
    ParakeetFeatureExtractor().save_pretrained(path)
    return path


def test_round_trip_evaluation(trained: Path, tts_corpus: Path, tmp_path: Path) -> None:
    from pipeline.config import DataSpec
    from pipeline.tts.roundtrip import evaluate_tts

    texts = [r.split(",", 1)[1].rsplit(",", 1)[0] for r in (tts_corpus / "train" / "metadata.csv").read_text().splitlines()[1:]]
    asr = _tiny_asr(tmp_path / "asr", texts)
    voc = _tiny_vocoder(tmp_path / "vocoder", "speecht5")
    m = evaluate_tts(trained, voc, asr, tmp_path / "rt", data=DataSpec(path=str(tts_corpus / "test")), sampler="ddim",
                     steps=2, write_audio=1, progress=False)
    assert m["sentences"] == 3
    for arm in ("tts", "griffin_lim", "recording"):
        assert m[arm]["wer"] >= 0.0 and np.isfinite(m[arm]["cer"])
    assert m["tts"]["wer_gap_vs_recordings"] == pytest.approx(m["tts"]["wer"] - m["recording"]["wer"])
    assert np.isfinite(m["log_mel_l1_dtw"]) and m["log_mel_l1_dtw"] > 0
    rows = [json.loads(x) for x in (tmp_path / "rt" / "utterances.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {"tts_hypothesis", "griffin_lim_hypothesis", "recording_hypothesis"} <= set(rows[0])
    assert json.loads((tmp_path / "rt" / "metrics.json").read_text()) == m
    audio, sr = sf.read(str(tmp_path / "rt" / "audio" / "0000_tts.wav"))
    assert sr == 16000 and np.isfinite(audio).all()
