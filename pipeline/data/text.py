"""Text normalisation for training targets and WER, and the character vocabulary.

The same normaliser is applied to training transcripts, references and hypotheses, and its name is
recorded in the model directory and in `metrics.json`, so a reported WER says what it measured.

Normalisers:
- ``default``: Unicode NFKC, lower-case, curly apostrophes made straight, every character that is
  not a letter, a digit, an apostrophe inside a word or white space becomes a space, white space is
  collapsed. "Hello, World!" -> "hello world"; "rock'n'roll" keeps its apostrophes.
- ``english``: ``default``, then contractions expanded ("don't" -> "do not") and digits spelled
  out ("42" -> "forty two"), so that "2 cats" and "two cats" score the same.
- ``none``: text used exactly as written (white space at the ends stripped).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_SPACE = re.compile(r"\s+")


def _default(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    chars = []
    for i, ch in enumerate(text):
        if ch.isalnum() or ch.isspace():
            chars.append(ch)
        elif ch == "'":
            inside = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            chars.append(ch if inside else " ")
        elif unicodedata.category(ch).startswith("M"):  # combining marks stay with their letter
            chars.append(ch)
        else:
            chars.append(" ")
    return _SPACE.sub(" ", "".join(chars)).strip()


_CONTRACTIONS = {
    "won't": "will not", "can't": "cannot", "shan't": "shall not", "ain't": "is not",
    "let's": "let us", "n't": " not", "'re": " are", "'ve": " have", "'ll": " will",
    "'d": " would", "'m": " am",
}
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return number_to_words(head) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError(n)


def _english(text: str) -> str:
    text = _default(text)
    for short, full in _CONTRACTIONS.items():
        if short.startswith("'") or short.startswith("n'"):
            text = re.sub(rf"(?<=\w){re.escape(short)}\b", full, text)
        else:
            text = re.sub(rf"\b{re.escape(short)}\b", full, text)
    text = re.sub(r"\d+", lambda m: " " + number_to_words(int(m.group())) + " " if len(m.group()) < 13 else m.group(), text)
    return _SPACE.sub(" ", text).strip()


def _none(text: str) -> str:
    return text.strip()


NORMALIZERS: dict[str, Callable[[str], str]] = {"default": _default, "english": _english, "none": _none}


def get_normalizer(name: str) -> Callable[[str], str]:
    from pipeline.errors import RecipeError

    try:
        return NORMALIZERS[name]
    except KeyError:
        raise RecipeError(f"data.normalizer: unknown normaliser {name!r} (choose {', '.join(NORMALIZERS)})") from None


WORD_DELIMITER = "|"
PAD = "<pad>"
UNK = "<unk>"


def build_vocab(texts: Iterable[str], blank_last: bool = False) -> dict[str, int]:
    """Character vocabulary of (normalised) training transcripts; spaces become the word delimiter.

    Built from the train split only, so evaluation text never leaks into the model. The blank
    (= pad) comes first, or last for families whose checkpoints put it last (Parakeet).
    """
    chars = sorted({ch for text in texts for ch in text if ch != " "})
    symbols = [WORD_DELIMITER, *chars, UNK]
    if blank_last:
        symbols.append(PAD)
    else:
        symbols.insert(0, PAD)
    return {s: i for i, s in enumerate(symbols)}
