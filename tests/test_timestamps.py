"""Word timestamps (`transcribe.py --timestamps`): frame spans of each word, in seconds, for every decoder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import local_wav2vec2, parakeet_tokenizer

from pipeline.audio import read_audio
from pipeline.data.text import build_vocab
from pipeline.errors import ModelError
from pipeline.evaluation.evaluate import build_transcriber, load_model_dir
from pipeline.evaluation.inference import Transcriber
from pipeline.evaluation.timestamps import aligned_confidence, path_words, peak_confidence, settle, token_runs
from pipeline.models.asr import character_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def tiny(trained_tiny_model: Path):
    return load_model_dir(str(trained_tiny_model), device="cpu")


@pytest.fixture(scope="module")
def test_audios(tiny_corpus: Path) -> list[np.ndarray]:
    return [read_audio(str(p), 16000)[0] for p in sorted((tiny_corpus / "test").glob("*.wav"))[:6]]


def test_token_runs_merge_repeats_and_blank_separates_equal_tokens() -> None:
    blank = 9
    assert token_runs([1, 1, 9, 1, 2, 2, 9, 9, 3], blank) == [(1, 0, 2), (1, 3, 4), (2, 4, 6), (3, 8, 9)]
    assert token_runs([], blank) == [] and token_runs([9, 9], blank) == []


def test_character_words_equal_the_tokenizers_own_offsets() -> None:
    """On a character vocabulary, `path_words` gives what `Wav2Vec2CTCTokenizer` computes for the same path."""
    tok = character_tokenizer(build_vocab(["the cat sat on a mat"]))
    blank, delimiter = tok.pad_token_id, tok.word_delimiter_token_id
    letters = [tok.convert_tokens_to_ids(c) for c in "thecasonm"]
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        path = rng.choice(letters + [blank] * 4 + [delimiter] * 2, size=int(rng.integers(0, 40))).tolist()
        theirs = tok.decode(path, output_word_offsets=True)
        ours = path_words(path, tok, blank)
        assert [(w, s, e) for w, s, e, _ in ours] == \
            [(w["word"], int(w["start_offset"]), int(w["end_offset"])) for w in theirs.word_offsets], path
        assert [w for w, *_ in ours] == theirs.text.split() and all(c is None for *_, c in ours)
        checked += len(ours)
    assert checked > 300


def test_sentencepiece_words_start_at_word_start_pieces() -> None:
    tok = parakeet_tokenizer()
    blank = tok.pad_token_id
    ids = {p: tok.convert_tokens_to_ids(p) for p in ("▁the", "▁", "c", "a", "t", "ing", "s")}
    #        0 1       2       3       4      5        6       7      8        9      10      11
    path = [blank, ids["▁the"], ids["▁the"], blank, ids["▁"], ids["c"], ids["a"], blank, ids["t"], ids["ing"], ids["s"], blank]
    assert path_words(path, tok, blank) == [("the", 1, 3, None), ("catings", 4, 11, None)]
    assert [w for w, *_ in path_words(path, tok, blank)] == tok.decode(path).split()


def test_settle_takes_the_lag_off_and_keeps_words_on_the_speech() -> None:
    sr = 1000
    audio = np.zeros(1000, dtype=np.float32)
    audio[100:750] = 0.5  # speech from 0.1 s to 0.75 s
    raw = {"text": "a b", "words": [{"word": "a", "start": 0.0, "end": 0.5}, {"word": "b", "start": 0.6, "end": 0.9}]}
    assert settle(raw, audio, sr)["words"] == [  # the last word ends 0.15 s after the speech: the lag
        {"word": "a", "start": 0.1, "end": 0.35}, {"word": "b", "start": 0.45, "end": 0.75}]
    early = {"text": "a", "words": [{"word": "a", "start": 0.2, "end": 0.6}]}
    assert settle(early, audio, sr) == early  # no lag: nothing moves
    squeezed = {"text": "a b", "words": [{"word": "a", "start": 0.0, "end": 0.05, "confidence": 0.9},
                                         {"word": "b", "start": 0.3, "end": 0.8}]}
    assert settle(squeezed, audio, sr, min_seconds=0.032)["words"] == [  # a keeps one frame; confidence kept
        {"word": "a", "start": 0.1, "end": 0.132, "confidence": 0.9}, {"word": "b", "start": 0.25, "end": 0.75}]
    assert settle({"text": "", "words": []}, audio, sr) == {"text": "", "words": []}


def test_confidence_is_the_product_of_each_tokens_peak_probability() -> None:
    blank, vocab = 0, 4
    probs = torch.full((7, vocab), 0.01)
    for t, (token, p) in enumerate([(1, 0.9), (1, 0.6), (0, 0.97), (2, 0.5), (3, 0.8), (3, 0.97), (0, 0.97)]):
        probs[t, token] = p
    log_probs = probs.log()
    path = log_probs.argmax(-1).tolist()
    runs = token_runs(path, blank)
    assert runs == [(1, 0, 2), (2, 3, 4), (3, 4, 6)]
    assert peak_confidence(runs, log_probs) == pytest.approx(0.9 * 0.5 * 0.97)
    assert aligned_confidence(log_probs, [1, 2, 3], blank) == pytest.approx(0.9 * 0.5 * 0.97)  # the same path
    assert aligned_confidence(log_probs[:2], [1, 2, 3], blank) is None  # three tokens, two frames
    tok = character_tokenizer(build_vocab(["ab ba"]))
    ids = [tok.convert_tokens_to_ids(c) for c in "ab"]
    path = [ids[0], tok.pad_token_id, ids[1], tok.word_delimiter_token_id, ids[1], ids[0]]
    log_probs = torch.full((6, len(tok)), -8.0)
    log_probs[torch.arange(6), torch.tensor(path)] = torch.tensor([-0.1, -0.01, -0.7, -0.01, -0.2, -0.3])
    words = path_words(path, tok, tok.pad_token_id, log_probs)
    assert [(w, s, e) for w, s, e, _ in words] == [("ab", 0, 3), ("ba", 4, 6)]
    assert [c for *_, c in words] == pytest.approx([math.exp(-0.8), math.exp(-0.5)])


def check_words(result: dict, audio: np.ndarray, sr: int = 16000) -> None:
    """Words spell the transcript, in order, each within the speech."""
    from pipeline.audio import loud_span

    assert [w["word"] for w in result["words"]] == result["text"].split()
    assert all(0.0 <= w["confidence"] <= 1.0 for w in result["words"])
    lo, hi = (x / sr for x in loud_span(audio, -40.0))
    nexts = [w["start"] for w in result["words"][1:]] + [hi]
    for w, next_start in zip(result["words"], nexts, strict=True):
        assert lo - 1e-3 <= w["start"] <= w["end"] <= next_start + 1e-3 <= hi + 2e-3, result


def test_greedy_words_agree_with_the_transcripts(tiny, test_audios) -> None:
    model, fe, tok, _ = tiny
    tr = Transcriber(model, fe, tok, batch_seconds=6)
    frame = tr.frame_seconds()
    assert frame == pytest.approx(4 * fe.hop_length / fe.sampling_rate)  # 4x subsampling of the log-mel hop
    texts = tr.transcribe(test_audios)
    raw = tr.transcribe_words(test_audios, on_speech=False)
    assert [t["text"] for t in raw] == texts and any(t["words"] for t in raw)
    for t, audio in zip(raw, test_audios, strict=True):  # the output frames' own spans
        assert [w["word"] for w in t["words"]] == t["text"].split()
        ends = [0.0] + [w["end"] for w in t["words"]]
        for w, previous_end in zip(t["words"], ends, strict=False):
            assert previous_end <= w["start"] < w["end"] <= len(audio) / 16000 + frame
            assert round(w["start"] / frame, 6) % 1 == 0 and round(w["end"] / frame, 6) % 1 == 0
    settled = tr.transcribe_words(test_audios)
    assert settled == [settle(t, a, 16000, frame) for t, a in zip(raw, test_audios, strict=True)]
    for t, audio in zip(settled, test_audios, strict=True):
        check_words(t, audio)


def test_words_of_a_chunked_file_count_from_its_start() -> None:
    """A model whose receptive field is shorter than the stride: chunked logits equal unchunked ones, and so do
    the word times of a long file, wherever the windows cut it."""
    from pipeline.evaluation.long_audio import LongAudioTranscriber

    torch.manual_seed(0)
    model, fe, tok = local_wav2vec2("abc def")
    tr = Transcriber(model, fe, tok, batch_seconds=4)
    audio = (np.random.default_rng(0).standard_normal(16000 * 5 + 123) * 0.1).astype(np.float32)
    whole = tr.transcribe_words([audio])[0]
    chunked = LongAudioTranscriber(tr, chunk_seconds=1.0, stride_seconds=0.2).transcribe_words([audio, audio[:8000]])
    assert chunked[0] == whole and chunked[1] == tr.transcribe_words([audio[:8000]])[0]
    assert whole["words"][-1]["end"] > 4.0  # words all through the file, in seconds from its start


def test_words_equal_the_transformers_pipeline_where_it_knows_the_frame_rate(tmp_path: Path) -> None:
    """wav2vec 2.0 declares its frame rate (`inputs_to_logits_ratio`); there the pipeline's word times are ours."""
    from transformers import pipeline

    torch.manual_seed(0)
    model, fe, tok = local_wav2vec2("the cat sat on a mat", num_hidden_layers=1, do_normalize=True)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # a random head that changes its mind often: many words
    for part in (model, tok, fe):
        part.save_pretrained(tmp_path)
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path), device=-1)
    model, fe, tok, _ = load_model_dir(str(tmp_path), device="cpu")
    tr = Transcriber(model, fe, tok)
    rng = np.random.default_rng(1)
    audios = [(rng.standard_normal(int(16000 * s)) * 0.1).astype(np.float32) for s in (0.5, 1.3, 2.0)]
    ours = tr.transcribe_words(audios, on_speech=False)  # the pipeline's are the frames' own
    compared = 0
    for audio, mine in zip(audios, ours, strict=True):
        theirs = asr({"raw": audio, "sampling_rate": 16000}, return_timestamps="word")
        assert mine["text"] == theirs["text"]
        assert [(w["word"], w["start"], w["end"]) for w in mine["words"]] == \
            [(c["text"], round(float(c["timestamp"][0]), 3), round(float(c["timestamp"][1]), 3)) for c in theirs["chunks"]]
        compared += len(mine["words"])
    assert compared >= 10


def test_beam_and_choices_words_spell_their_transcripts(tiny, test_audios, trained_tiny_model: Path) -> None:
    model, fe, tok, _ = tiny
    beam, _ = build_transcriber(model, fe, tok, trained_tiny_model, decoder="beam", chunk_seconds=0)
    phrases = ["the cat", "a dog ran", "hello there world"]
    choose, _ = build_transcriber(model, fe, tok, trained_tiny_model, decoder="choices", choices=phrases)
    for transcriber in (beam, choose):
        texts = transcriber.transcribe(test_audios)
        timed = transcriber.transcribe_words(test_audios)
        assert [t["text"] for t in timed] == texts
        for t, audio in zip(timed, test_audios, strict=True):
            check_words(t, audio)
    assert all(t["text"] in phrases for t in choose.transcribe_words(test_audios))


def test_transcribe_script_writes_words_and_refuses_several_tempos(trained_tiny_model: Path, tiny_corpus: Path,
                                                                   run_script) -> None:
    wavs = [str(p) for p in sorted((tiny_corpus / "test").glob("*.wav"))[:3]]
    proc = run_script("transcribe.py", "--model", str(trained_tiny_model), "--timestamps", *wavs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["audio"] for x in lines] == wavs
    assert all([w["word"] for w in x["words"]] == x["text"].split() for x in lines)
    plain = run_script("transcribe.py", "--model", str(trained_tiny_model), *wavs)
    assert [json.loads(x) for x in plain.stdout.splitlines()] == [{"audio": x["audio"], "text": x["text"]} for x in lines]
    refused = run_script("transcribe.py", "--model", str(trained_tiny_model), "--timestamps", "--tempos", "1,1.1", wavs[0])
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1] == "error: --timestamps needs decoding at one tempo: leave out --tempos"
    model, fe, tok, _ = load_model_dir(str(trained_tiny_model), device="cpu")
    tempo, _ = build_transcriber(model, fe, tok, trained_tiny_model, tempos=[1.0, 1.1], chunk_seconds=0)
    with pytest.raises(ModelError, match="one tempo"):
        tempo.transcribe_words([read_audio(wavs[0], 16000)[0]])


def test_cues_keep_to_the_limits_and_render_as_srt_and_vtt() -> None:
    from pipeline.evaluation.subtitles import clock, cues, render

    def word(w: str, start: float, end: float) -> dict:
        return {"word": w, "start": start, "end": end}

    words = [word("one", 0.1, 0.4), word("two", 0.5, 0.8),  # together
             word("three", 2.0, 2.4),  # after a 1.2-s pause: a new cue
             word("a" * 33, 2.5, 3.0), word("four", 3.1, 3.3),  # 5 + 1 + 33 fits 42, then " four" does not
             word("five", 3.4, 9.0), word("six", 9.1, 9.5)]  # 5.6 s on screen: "six" would make it 6.1
    got = cues(words)
    assert [(c["text"], c["start"], c["end"]) for c in got] == [
        ("one two", 0.1, 0.8), ("three " + "a" * 33, 2.0, 3.0), ("four five", 3.1, 9.0), ("six", 9.1, 9.5)]
    assert clock(3725.0456, ",") == "01:02:05,046" and clock(-0.01, ".") == "00:00:00.000"
    assert render(got[:2], "srt") == ("1\n00:00:00,100 --> 00:00:00,800\none two\n\n"
                                      "2\n00:00:02,000 --> 00:00:03,000\nthree " + "a" * 33 + "\n")
    assert render(got[:1], "vtt") == "WEBVTT\n\n00:00:00.100 --> 00:00:00.800\none two\n"
    assert cues([]) == [] and render([], "vtt") == "WEBVTT\n"


def test_transcribe_script_writes_subtitles(trained_tiny_model: Path, tiny_corpus: Path, tmp_path: Path,
                                            run_script) -> None:
    wavs = [str(p) for p in sorted((tiny_corpus / "test").glob("*.wav"))[:2]]
    out = tmp_path / "subs"
    proc = run_script("transcribe.py", "--model", str(trained_tiny_model), "--subtitles", str(out),
                      "--subtitle-format", "vtt", *wavs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for line, wav in zip(proc.stdout.splitlines(), wavs, strict=True):
        record = json.loads(line)
        path = out / (Path(wav).stem + ".vtt")
        assert record["subtitles"] == str(path) and "words" not in record
        text = path.read_text(encoding="utf-8")
        assert text.startswith("WEBVTT\n")
        said = [x for x in text.split("\n\n")[1:] if x.strip()]
        assert " ".join(x.splitlines()[1] for x in said).split() == record["text"].split()
    copy = tmp_path / "other" / Path(wavs[0]).name
    copy.parent.mkdir()
    copy.write_bytes(Path(wavs[0]).read_bytes())
    clash = run_script("transcribe.py", "--model", str(trained_tiny_model), "--subtitles", str(out), wavs[0], str(copy))
    assert clash.returncode != 0 and f"would both write {Path(wavs[0]).stem}.srt" in clash.stderr.strip().splitlines()[-1]
