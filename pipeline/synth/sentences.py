"""Deterministic generator of short, easy English sentences for the synthetic corpus.

Why a small closed vocabulary: a model trained on a few hours of espeak speech can only
learn a limited lexicon, and a closed, common word list keeps the text easy for espeak
to pronounce and keeps train and test on the same vocabulary (test speakers are new, not
test words). Output is lowercase letters, apostrophes and single spaces, no punctuation.
"""

from __future__ import annotations

import random

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_DET = ("the", "a", "my", "your", "his", "her", "our", "their", "this", "that", "every", "one")
_PRONOUN = ("i", "you", "he", "she", "we", "they", "it")
_NOUN = (
    "cat", "dog", "house", "car", "tree", "book", "table", "chair", "door", "window",
    "garden", "river", "road", "city", "school", "teacher", "child", "mother", "father", "friend",
    "doctor", "farmer", "baby", "bird", "fish", "horse", "apple", "bread", "cake", "milk",
    "water", "coffee", "box", "bag", "letter", "phone", "picture", "song", "game", "ball",
    "boat", "train", "plane", "bike", "shop", "park", "room", "kitchen", "bed", "hat",
    "coat", "shoe", "key", "clock", "lamp", "cup", "plate", "story", "idea", "plan",
    "hill", "lake", "sea", "sun", "moon", "star", "rain", "snow", "wind", "flower",
    "king", "queen", "man", "woman", "boy", "girl", "team", "family", "village", "market",
    "paper", "music", "money", "night", "morning", "street", "office", "bus", "egg", "orange",
    "ship", "forest", "beach", "cow", "sheep", "mouse", "ring", "gift", "shirt", "pencil",
)  # fmt: skip
_ADJ = (
    "big", "small", "old", "new", "red", "blue", "green", "black", "white", "yellow",
    "happy", "sad", "warm", "cold", "hot", "quiet", "loud", "long", "short", "good",
    "bad", "nice", "fast", "slow", "young", "tall", "dark", "bright", "clean", "soft",
    "heavy", "light", "sweet", "busy", "funny", "kind", "strong", "little", "pretty", "brown",
    "rich", "poor", "wet", "dry", "full", "empty",
)  # fmt: skip
_VERB_PAST = (
    "saw", "found", "liked", "made", "took", "gave", "bought", "sold", "washed", "painted",
    "opened", "closed", "moved", "carried", "cleaned", "watched", "helped", "called", "wanted", "needed",
    "loved", "kept", "lost", "brought", "left", "met", "heard", "read", "built", "fixed",
)  # fmt: skip
_VERB_BASE = (
    "see", "find", "like", "make", "take", "give", "buy", "sell", "wash", "paint",
    "open", "close", "move", "carry", "clean", "watch", "help", "call", "want", "need",
    "love", "keep", "bring", "meet", "hear", "build", "fix", "visit", "draw", "cook",
)  # fmt: skip
_VERB_INTR = ("ran", "walked", "slept", "sang", "jumped", "waited", "smiled", "laughed", "played", "danced")
_PREP = ("in", "on", "under", "near", "behind", "with", "from", "to", "at", "by", "into", "over")
_ADV = (
    "today", "now", "again", "slowly", "quickly", "here", "there", "soon", "yesterday", "later",
    "always", "never", "often", "tonight", "outside", "home", "tomorrow", "together", "too", "early",
)  # fmt: skip
_MODAL = ("can", "will", "should", "must", "could", "would", "might")
_CONTRACTION = ("don't", "can't", "won't", "didn't")
_SUBJ_CONTRACTION = ("it's", "that's", "there's", "he's", "she's")
_FUNCTION = (
    "and",
    "but",
    "is",
    "was",
    "are",
    "were",
    "not",
    "all",
    "some",
    "more",
    "what",
    "where",
    "when",
    "number",
)

WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        DIGITS + _DET + _PRONOUN + _NOUN + _ADJ + _VERB_PAST + _VERB_BASE + _VERB_INTR + _PREP + _ADV
        + _MODAL + _CONTRACTION + _SUBJ_CONTRACTION + _FUNCTION
    )
)  # fmt: skip


def _np(rng: random.Random, adj_p: float = 0.4) -> list[str]:
    """A noun phrase: determiner, optional adjective, noun."""
    words = [rng.choice(_DET)]
    if rng.random() < adj_p:
        words.append(rng.choice(_ADJ))
    words.append(rng.choice(_NOUN))
    return words


def _subject(rng: random.Random) -> list[str]:
    return [rng.choice(_PRONOUN)] if rng.random() < 0.4 else _np(rng)


def _template(rng: random.Random) -> list[str]:
    """One grammatical-ish sentence from a randomly chosen pattern."""
    kind = rng.randrange(9)
    if kind == 0:  # the old dog saw a red ball in the park
        words = _subject(rng) + [rng.choice(_VERB_PAST)] + _np(rng)
        if rng.random() < 0.5:
            words += [rng.choice(_PREP)] + _np(rng, 0.2)
    elif kind == 1:  # we can fix the car today
        words = _subject(rng) + [rng.choice(_MODAL), rng.choice(_VERB_BASE)] + _np(rng)
        if rng.random() < 0.5:
            words.append(rng.choice(_ADV))
    elif kind == 2:  # the little girl sang near the river
        words = _subject(rng) + [rng.choice(_VERB_INTR)]
        words += [rng.choice(_PREP)] + _np(rng, 0.3) if rng.random() < 0.6 else [rng.choice(_ADV)]
    elif kind == 3:  # my number is four two seven
        lead = rng.choice(
            (["the", "number", "is"], ["my", "number", "is"], ["call"], ["the", "number", "was"])
        )
        words = lead + [rng.choice(DIGITS) for _ in range(rng.randint(2, 5))]
    elif kind == 4:  # i don't want the cold coffee
        words = [rng.choice(_PRONOUN), rng.choice(_CONTRACTION), rng.choice(_VERB_BASE)] + _np(rng)
    elif kind == 5:  # it's a nice house near the lake
        words = [rng.choice(_SUBJ_CONTRACTION)] + _np(rng, 0.8)
        if rng.random() < 0.4:
            words += [rng.choice(_PREP)] + _np(rng, 0.0)
    elif kind == 6:  # the sun is warm and the sea is blue
        words = _np(rng, 0.0) + [rng.choice(("is", "was")), rng.choice(_ADJ)]
        if rng.random() < 0.5:
            words += (
                [rng.choice(("and", "but"))] + _np(rng, 0.0) + [rng.choice(("is", "was")), rng.choice(_ADJ)]
            )
    elif kind == 7:  # where is the blue bag
        words = [rng.choice(("where", "what")), rng.choice(("is", "was"))] + _np(rng)
    else:  # the red car is number four
        words = (
            _np(rng)
            + [rng.choice(("is", "was")), "number"]
            + [rng.choice(DIGITS) for _ in range(rng.randint(1, 2))]
        )
    return words


def make_sentences(n: int, rng: random.Random, min_words: int = 3, max_words: int = 9) -> list[str]:
    """``n`` lowercase sentences of ``min_words``..``max_words`` words, deterministic given ``rng``.

    Templates give natural word order; when a template does not fit the length bounds a
    few times in a row, a random word sequence of a fitting length is used instead.
    """
    if n < 0 or min_words < 1 or max_words < min_words:
        raise ValueError(f"bad arguments: n={n}, min_words={min_words}, max_words={max_words}")
    out: list[str] = []
    for _ in range(n):
        words: list[str] | None = None
        if rng.random() < 0.85:
            for _attempt in range(4):
                cand = _template(rng)
                if min_words <= len(cand) <= max_words:
                    words = cand
                    break
        if words is None:
            words = [rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))]
        out.append(" ".join(words))
    return out
