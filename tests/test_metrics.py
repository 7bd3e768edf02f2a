"""WER/CER against jiwer, edge cases, and the text normalisers."""

from __future__ import annotations

import math
import random

import jiwer
import pytest

from pipeline.data.text import NORMALIZERS, build_vocab, get_normalizer, number_to_words
from pipeline.errors import RecipeError
from pipeline.evaluation.metrics import error_rates

WORDS = "the cat sat on a mat dog ran far away under blue sky".split()


def random_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    refs, hyps = [], []
    for _ in range(n):
        ref = [rng.choice(WORDS) for _ in range(rng.randint(1, 8))]
        hyp = list(ref)
        for _ in range(rng.randint(0, 3)):
            op = rng.choice("sdi")
            if op == "s" and hyp:
                hyp[rng.randrange(len(hyp))] = rng.choice(WORDS)
            elif op == "d" and hyp:
                del hyp[rng.randrange(len(hyp))]
            else:
                hyp.insert(rng.randint(0, len(hyp)), rng.choice(WORDS))
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp) or rng.choice(WORDS))
    return refs, hyps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_rates_equal_jiwer(seed: int) -> None:
    refs, hyps = random_pairs(40, seed)
    r = error_rates(refs, hyps)
    assert r["wer"] == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    assert r["cer"] == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)
    words = jiwer.process_words(refs, hyps)
    assert (r["substitutions"], r["deletions"], r["insertions"]) == (words.substitutions, words.deletions, words.insertions)
    chars = jiwer.process_characters(refs, hyps)
    assert (r["char_substitutions"], r["char_deletions"], r["char_insertions"]) == (
        chars.substitutions, chars.deletions, chars.insertions)
    assert r["reference_words"] == sum(len(x.split()) for x in refs)
    assert r["reference_chars"] == sum(len(x) for x in refs)
    assert r["num_utterances"] == 40 and len(r["per_utterance"]) == 40
    assert sum(u["word_errors"] for u in r["per_utterance"]) == words.substitutions + words.deletions + words.insertions


def test_simple_known_values() -> None:
    r = error_rates(["the cat sat", "on the mat"], ["the cat sit", "on mat the end"])
    # utt 1: 1 substitution; utt 2: 1 deletion + 2 insertions or equivalent -> jiwer's alignment
    assert r["wer"] == pytest.approx(jiwer.wer(["the cat sat", "on the mat"], ["the cat sit", "on mat the end"]))
    assert r["per_utterance"][0] == {"word_errors": 1, "words": 3, "char_errors": 1, "chars": 11}
    assert error_rates(["a b c"], ["a b c"])["wer"] == 0.0


def test_empty_hypothesis_counts_deletions() -> None:
    r = error_rates(["one two three", "four"], ["", "four"])
    assert r["deletions"] == 3 and r["insertions"] == 0 and r["substitutions"] == 0
    assert r["wer"] == pytest.approx(3 / 4)
    assert r["wer"] == pytest.approx(jiwer.wer(["one two three", "four"], ["", "four"]))
    assert r["cer"] == pytest.approx(jiwer.cer(["one two three", "four"], ["", "four"]))
    assert r["per_utterance"][0] == {"word_errors": 3, "words": 3, "char_errors": 13, "chars": 13}


def test_empty_reference_counts_insertions() -> None:
    r = error_rates(["a b", ""], ["a b", "x y"])
    assert r["insertions"] == 2 and r["reference_words"] == 2
    assert r["wer"] == pytest.approx(1.0)
    assert r["char_insertions"] == 3  # "x y": x, space, y
    assert r["per_utterance"][1] == {"word_errors": 2, "words": 0, "char_errors": 3, "chars": 0}
    only_empty = error_rates([""], ["extra words"])
    assert math.isinf(only_empty["wer"]) and only_empty["insertions"] == 2
    assert error_rates(["", ""], ["", ""])["wer"] == 0.0
    with pytest.raises(ValueError):
        error_rates(["a"], ["a", "b"])


def test_unicode_accents_and_cjk() -> None:
    refs, hyps = ["café au lait", "naïve"], ["cafe au lait", "naïve"]
    r = error_rates(refs, hyps)
    assert r["substitutions"] == 1 and r["wer"] == pytest.approx(1 / 4)
    assert r["char_substitutions"] == 1 and r["cer"] == pytest.approx(1 / 17)
    assert r["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    cjk = error_rates(["你好世界", "日本語"], ["你好世间", "日本語"])
    assert cjk["cer"] == pytest.approx(1 / 7) == pytest.approx(jiwer.cer(["你好世界", "日本語"], ["你好世间", "日本語"]))
    assert cjk["wer"] == pytest.approx(1 / 2)  # no spaces: each utterance is one word


def test_punctuation_only_after_normalisation_is_empty() -> None:
    norm = get_normalizer("default")
    refs = [norm("Hello, world!"), norm("?!...")]
    hyps = [norm("hello world"), norm("uh")]
    assert refs == ["hello world", ""]
    r = error_rates(refs, hyps)
    assert r["wer"] == pytest.approx(1 / 2) and r["insertions"] == 1 and r["reference_words"] == 2


@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world"),
    ("rock'n'roll", "rock'n'roll"),
    ("don\u2019t", "don't"),
    ("'quoted' words", "quoted words"),
    ("\u2018single\u2019", "single"),
    ("  lots   of \t space\n", "lots of space"),
    ("e-mail: a@b.com", "e mail a b com"),
    ("42 Cats", "42 cats"),
    ("\ufb01ne \u2460", "fine 1"),  # NFKC: ligature and circled digit
    ("cafe\u0301", "caf\u00e9"),  # composed
    ("ÜBER straße", "über straße"),
    ("東京タワー", "東京タワー"),
    ("?!...", ""),
    ("", ""),
])
def test_default_normaliser(text: str, expected: str) -> None:
    assert NORMALIZERS["default"](text) == expected


@pytest.mark.parametrize("text, expected", [
    ("I don't know", "i do not know"),
    ("I can't, won't", "i cannot will not"),
    ("They're here; we've gone, you'll see, I'd go, I'm in", "they are here we have gone you will see i would go i am in"),
    ("Let's go", "let us go"),
    ("2 cats", "two cats"),
    ("42", "forty two"),
    ("1999", "one thousand nine hundred ninety nine"),
    ("100 and 0", "one hundred and zero"),
    ("it's 12abc", "it's twelve abc"),
    ("Hello, World!", "hello world"),
])
def test_english_normaliser(text: str, expected: str) -> None:
    assert NORMALIZERS["english"](text) == expected


def test_english_makes_digits_and_words_score_the_same() -> None:
    norm = get_normalizer("english")
    assert error_rates([norm("I have 2 cats")], [norm("i have two cats")])["wer"] == 0.0


def test_none_normaliser_keeps_text_as_written() -> None:
    assert get_normalizer("none")("  Hello, World!  ") == "Hello, World!"


def test_number_to_words() -> None:
    assert number_to_words(0) == "zero"
    assert number_to_words(19) == "nineteen"
    assert number_to_words(20) == "twenty"
    assert number_to_words(101) == "one hundred one"
    assert number_to_words(2_000_003) == "two million three"


def test_unknown_normaliser_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError, match="data.normalizer"):
        get_normalizer("fancy")


def test_build_vocab() -> None:
    v = build_vocab(["ab c", "ca"])
    assert v == {"<pad>": 0, "|": 1, "a": 2, "b": 3, "c": 4, "<unk>": 5}
    last = build_vocab(["ab c"], blank_last=True)
    assert last["<pad>"] == len(last) - 1 and last["|"] == 0
