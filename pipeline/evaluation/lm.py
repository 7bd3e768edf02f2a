"""Word n-gram language models for CTC beam search, built offline, used through pyctcdecode + KenLM.

Building (no KenLM binaries needed): `build_ngram_model` counts n-grams of normalised sentences and
estimates an *interpolated modified Kneser-Ney* model (Chen & Goodman 1999, as KenLM's `lmplz`
does: continuation counts for lower orders, three discounts per order from count-of-counts,
interpolation down to a uniform distribution over the vocabulary, `<unk>` included). `write_arpa`
writes it as an ARPA file whose backoff weights are the interpolation weights, so every context's
probabilities sum to 1.

Saving (`save_decoder_dir`) uses exactly the layout of pyctcdecode's
`BeamSearchDecoderCTC.save_to_dir`, which `transformers.pipeline` and `Wav2Vec2ProcessorWithLM`
load::

    DIR/alphabet.json                   {"labels": [...one per tokenizer id...], "is_bpe": false|true}
    DIR/language_model/attrs.json       {"alpha", "beta", "unk_score_offset", "score_boundary"}
    DIR/language_model/unigrams.txt     the LM's words, one per line
    DIR/language_model/lm.arpa          the n-gram model
    DIR/lm_info.json                    how it was built (order, counts, discounts, normaliser, source)

When DIR is a model directory, its feature-extractor config also gets
``"processor_class": "Wav2Vec2ProcessorWithLM"``: that is the flag `transformers.pipeline` looks
for before it attaches the decoder (pipeline type ``ctc_with_lm``).

Decoding: `load_decoder` rebuilds the decoder for a tokenizer after a pre-flight check that the
alphabet matches the tokenizer id for id, and `BeamSearchTranscriber` is the greedy
`Transcriber` with its per-utterance decoding swapped for pyctcdecode's beam search (same
batching, same masking of padded frames).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import ModelError
from pipeline.evaluation.inference import Transcriber
from pipeline.evaluation.timestamps import Timed, aligned_confidence, timed

logger = logging.getLogger(__name__)

BOS, EOS, UNK_WORD = "<s>", "</s>", "<unk>"
LM_DIR = "language_model"
ALPHABET_FILE = "alphabet.json"
ATTRS_FILE = "attrs.json"
UNIGRAMS_FILE = "unigrams.txt"
ARPA_FILE = "lm.arpa"
INFO_FILE = "lm_info.json"
PROCESSOR_CLASS = "Wav2Vec2ProcessorWithLM"
PYCTC_UNK = "\u2047"  # pyctcdecode's stand-in for the tokenizer's <unk>
BPE_MARK = "\u2581"  # SentencePiece-style word start of subword vocabularies
PYCTC_UNK_BPE = BPE_MARK + PYCTC_UNK + BPE_MARK  # pyctcdecode's <unk> in a subword alphabet

DEFAULT_ALPHA = 0.5
DEFAULT_BETA = 1.5
DEFAULT_UNK_OFFSET = -10.0
DEFAULT_BEAM_WIDTH = 64
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


# ----------------------------------------------------------------------------------------------
# Building an interpolated modified Kneser-Ney model
# ----------------------------------------------------------------------------------------------
@dataclass
class NgramModel:
    """log10 probabilities and backoff weights of every listed n-gram, by order (1-based)."""

    order: int
    logprob: list[dict[tuple[str, ...], float]]  # logprob[n-1][ngram]
    backoff: list[dict[tuple[str, ...], float]]  # backoff[n-1][ngram] (orders < `order`)
    discounts: list[tuple[float, float, float]] = field(default_factory=list)
    sentences: int = 0
    tokens: int = 0

    @property
    def vocabulary(self) -> list[str]:
        return sorted(g[0] for g in self.logprob[0])

    def log10_prob(self, word: str, context: Sequence[str] = ()) -> float:
        """log10 p(word | context) with ARPA backoff (unknown words are <unk>)."""
        if (word,) not in self.logprob[0]:
            word = UNK_WORD
        context = tuple(c if (c,) in self.logprob[0] else UNK_WORD for c in context)[-(self.order - 1):] if self.order > 1 else ()
        bow = 0.0
        for start in range(len(context) + 1):
            h = context[start:]
            g = (*h, word)
            if g in self.logprob[len(g) - 1]:
                return self.logprob[len(g) - 1][g] + bow
            if h:
                bow += self.backoff[len(h) - 1].get(h, 0.0)
        raise AssertionError("unigram missing")  # every vocabulary word has a unigram


def tokenize(sentences: Iterable[str]) -> Iterable[list[str]]:
    for s in sentences:
        words = s.split()
        if words:
            yield words


def _discounts(counts: Counter, order: int) -> tuple[float, float, float]:
    t = Counter(min(c, 5) for c in counts.values())
    t1, t2, t3, t4 = t[1], t[2], t[3], t[4]
    if min(t1, t2, t3, t4) > 0:
        y = t1 / (t1 + 2 * t2)
        d = (1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
        if all(0 < d[k] < k + 1 for k in range(3)):
            return d
    logger.info("order %d: too little data for modified Kneser-Ney discounts (count-of-counts %s); "
                "using %s", order, [t1, t2, t3, t4], FALLBACK_DISCOUNTS)
    return FALLBACK_DISCOUNTS


def build_ngram_model(sentences: Iterable[str], order: int = 3) -> NgramModel:
    """Interpolated modified Kneser-Ney n-gram model of white-space tokenised sentences."""
    if order < 2:
        raise ValueError("order must be at least 2 (KenLM loads bigram and higher models only)")
    raw: list[Counter] = [Counter() for _ in range(order)]
    n_sent = n_tok = 0
    for words in tokenize(sentences):
        n_sent += 1
        n_tok += len(words) + 1
        seq = [BOS, *words, EOS]
        for n in range(1, order + 1):
            for i in range(len(seq) - n + 1):
                raw[n - 1][tuple(seq[i:i + n])] += 1
    if n_sent == 0:
        raise ValueError("no text to build a language model from")

    # Adjusted counts: raw counts at the highest order and for n-grams starting with <s>
    # (they cannot be extended to the left); elsewhere the number of distinct left extensions.
    adjusted: list[Counter] = [Counter() for _ in range(order)]
    adjusted[order - 1] = raw[order - 1]
    for n in range(order - 1, 0, -1):
        left: Counter = Counter(g[1:] for g in raw[n])
        adj = adjusted[n - 1]
        for g, c in raw[n - 1].items():
            adj[g] = c if g[0] == BOS else left[g]
    adjusted[0].pop((BOS,), None)  # <s> is never predicted
    vocab = {g[0] for g in raw[0]} | {UNK_WORD, EOS}
    vocab.discard(BOS)
    discounts = [_discounts(adjusted[n], n + 1) for n in range(order)]

    logprob: list[dict[tuple[str, ...], float]] = [{} for _ in range(order)]
    backoff: list[dict[tuple[str, ...], float]] = [{} for _ in range(order)]
    prob: list[dict[tuple[str, ...], float]] = [{} for _ in range(order)]
    for n in range(1, order + 1):
        d = discounts[n - 1]
        by_context: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
        for g, c in adjusted[n - 1].items():
            by_context[g[:-1]].append((g[-1], c))
        for h, entries in by_context.items():
            total = sum(c for _, c in entries)
            kinds = Counter(min(c, 3) for _, c in entries)
            gamma = (d[0] * kinds[1] + d[1] * kinds[2] + d[2] * kinds[3]) / total
            if n == 1:
                lower = {w: 1.0 / len(vocab) for w in vocab}
                for w in vocab:  # unseen words (<unk>) get only the uniform share
                    prob[0][(w,)] = gamma * lower[w]
            for w, c in entries:
                alpha = (c - d[min(c, 3) - 1]) / total
                lower_p = 1.0 / len(vocab) if n == 1 else prob[n - 2][(*h[1:], w)]
                prob[n - 1][(*h, w)] = alpha + gamma * lower_p
            if n > 1:
                backoff[n - 2][h] = math.log10(gamma) if gamma > 0 else -99.0
    for n in range(order):
        logprob[n] = {g: math.log10(p) for g, p in prob[n].items()}
    logprob[0][(BOS,)] = -99.0
    for n in range(order - 1):  # contexts never extended back off with weight 1
        for g in logprob[n]:
            backoff[n].setdefault(g, 0.0)
    return NgramModel(order, logprob, backoff, discounts, n_sent, n_tok)


def write_arpa(model: NgramModel, path: str | Path) -> None:
    """The model in ARPA format (log10 probabilities and backoff weights)."""
    from pipeline.io import atomic_write

    with atomic_write(path) as f:
        f.write("\\data\\\n")
        for n in range(model.order):
            f.write(f"ngram {n + 1}={len(model.logprob[n])}\n")
        for n in range(model.order):
            f.write(f"\n\\{n + 1}-grams:\n")
            last = n == model.order - 1
            for g in sorted(model.logprob[n]):
                line = f"{model.logprob[n][g]:.6f}\t{' '.join(g)}"
                if not last:
                    line += f"\t{model.backoff[n].get(g, 0.0):.6f}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")


def read_arpa(path: str | Path) -> NgramModel:
    """Parse an ARPA file (for checks and tests; decoding uses KenLM)."""
    logprob: list[dict] = []
    backoff: list[dict] = []
    section = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("ngram ") or line == "\\data\\":
                continue
            if line == "\\end\\":
                break
            if line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1:line.index("-")])
                logprob.append({})
                backoff.append({})
                continue
            parts = line.split("\t")
            g = tuple(parts[1].split(" "))
            if len(g) != section:
                raise ValueError(f"{path}: {len(g)}-gram in the {section}-grams section: {line!r}")
            logprob[section - 1][g] = float(parts[0])
            if len(parts) > 2:
                backoff[section - 1][g] = float(parts[2])
    return NgramModel(len(logprob), logprob, backoff)


# ----------------------------------------------------------------------------------------------
# Alphabet: one label per tokenizer id, as pyctcdecode spells them
# ----------------------------------------------------------------------------------------------
def tokenizer_labels(tokenizer: Any) -> list[str]:
    """The decoder alphabet for a CTC tokenizer: its tokens in id order, the blank (pad) as "",
    the word delimiter as " " and the unknown token as pyctcdecode's "⁇" ("▁⁇▁" in a subword
    alphabet, whose word-initial tokens start with "▁")."""
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    labels: list[str | None] = [None] * size
    for token, i in vocab.items():
        labels[i] = token
    if any(lab is None for lab in labels):
        raise ModelError("the tokenizer's ids are not contiguous; cannot build a CTC decoder alphabet for it")
    pad = getattr(tokenizer, "pad_token", None)
    unk = getattr(tokenizer, "unk_token", None)
    delim = getattr(tokenizer, "word_delimiter_token", None) or "|"
    unk_label = PYCTC_UNK_BPE if is_bpe(labels) else PYCTC_UNK  # type: ignore[arg-type]
    out = []
    for lab in labels:
        if lab == pad:
            out.append("")
        elif lab == delim:
            out.append(" ")
        elif lab == unk:
            out.append(unk_label)
        else:
            out.append(lab)  # type: ignore[arg-type]
    if "" not in out:
        raise ModelError("the tokenizer has no pad token, which is the CTC blank; cannot decode with an LM")
    return out


def is_bpe(labels: Sequence[str]) -> bool:
    """A subword alphabet (word-initial tokens marked with "▁"), as pyctcdecode tells them apart."""
    return any(lab.startswith(BPE_MARK) for lab in labels)


def spelling_characters(labels: Sequence[str]) -> set[str]:
    """Characters the model can emit inside words (those of its labels, less space, blank, unk and "▁")."""
    return {ch for lab in labels if lab not in (" ", PYCTC_UNK, PYCTC_UNK_BPE) for ch in lab if ch != BPE_MARK}


def check_alphabet(labels: Sequence[str], unigrams: Sequence[str], where: str) -> None:
    """Pre-flight: the LM's words must be spelled with the model's characters (one-line error if not)."""
    chars = spelling_characters(labels)
    bad = [w for w in unigrams if any(ch not in chars for ch in w)]
    if not unigrams:
        raise ModelError(f"{where}: the language model has no words")
    if len(bad) > 0.5 * len(unigrams):
        missing = sorted({ch for w in bad for ch in w if ch not in chars})
        raise ModelError(
            f"{where}: the LM alphabet does not match the tokenizer: {len(bad)}/{len(unigrams)} LM words use "
            f"characters the model cannot emit ({''.join(missing[:20])!r}); build the LM with the model's "
            "normaliser (scripts/build_lm.py --model MODEL)")
    if bad:
        logger.warning("%s: %d of %d LM words use characters the model cannot emit (e.g. %r); they can "
                       "never be produced", where, len(bad), len(unigrams), bad[:3])


# ----------------------------------------------------------------------------------------------
# Saving and loading the pyctcdecode layout
# ----------------------------------------------------------------------------------------------
def build_lm_dir(sentences: Iterable[str], output: str | Path, order: int = 3, labels: Sequence[str] | None = None,
                 alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA, unk_score_offset: float = DEFAULT_UNK_OFFSET,
                 info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build an n-gram LM from normalised sentences and save it in the decoder layout.

    With `labels` (a model's alphabet, see `tokenizer_labels`), words the model cannot spell are
    replaced by <unk> before counting and `alphabet.json` is written too.
    """
    out = Path(output)
    sentences = list(sentences)
    replaced = 0
    if labels is not None:
        chars = spelling_characters(labels)
        cleaned = []
        for s in sentences:
            words = []
            for w in s.split():
                if all(ch in chars for ch in w):
                    words.append(w)
                else:
                    words.append(UNK_WORD)
                    replaced += 1
            cleaned.append(" ".join(words))
        sentences = cleaned
    model = build_ngram_model(sentences, order)
    unigrams = [w for w in model.vocabulary if w not in (BOS, EOS, UNK_WORD)]
    if labels is not None:
        check_alphabet(labels, unigrams, str(out))
    lm_dir = out / LM_DIR
    lm_dir.mkdir(parents=True, exist_ok=True)
    for stale in lm_dir.iterdir():  # pyctcdecode wants exactly three files here
        if stale.is_file() and stale.suffix in {".arpa", ".bin", ".binary"} and stale.name != ARPA_FILE:
            stale.unlink()
    write_arpa(model, lm_dir / ARPA_FILE)
    from pipeline.io import write_json, write_text

    write_json(lm_dir / ATTRS_FILE, {"alpha": float(alpha), "beta": float(beta),
                                     "unk_score_offset": float(unk_score_offset), "score_boundary": True})
    write_text(lm_dir / UNIGRAMS_FILE, "".join(w + "\n" for w in unigrams))
    if labels is not None:
        write_text(out / ALPHABET_FILE, json.dumps({"labels": list(labels), "is_bpe": is_bpe(labels)}))
    summary = {
        "order": order, "method": "interpolated modified Kneser-Ney",
        "ngrams": {str(n + 1): len(model.logprob[n]) for n in range(order)},
        "discounts": [list(map(float, d)) for d in model.discounts],
        "sentences": model.sentences, "tokens": model.tokens, "vocabulary": len(unigrams),
        "words_replaced_by_unk": replaced, **(info or {}),
    }
    write_json(out / INFO_FILE, summary)
    if (out / "config.json").is_file():
        mark_model_dir(out)
    return summary


def mark_model_dir(model_dir: str | Path) -> None:
    """Flag a model directory's feature-extractor config so `transformers.pipeline` loads the LM."""
    from pipeline.io import write_json

    for name in ("preprocessor_config.json", "processor_config.json"):
        path = Path(model_dir) / name
        if not path.is_file():
            continue
        cfg = json.loads(path.read_text(encoding="utf-8"))
        target = cfg.get("feature_extractor", cfg) if name == "processor_config.json" else cfg
        target["processor_class"] = PROCESSOR_CLASS
        write_json(path, cfg)


def find_lm_dir(path: str | Path) -> Path | None:
    """`path/language_model` or `path` itself when it holds the LM files; None otherwise."""
    p = Path(path)
    for cand in (p / LM_DIR, p):
        if (cand / ATTRS_FILE).is_file() and (cand / UNIGRAMS_FILE).is_file():
            return cand
    return None


def _require_decoder_libs() -> None:
    missing = []
    for mod in ("pyctcdecode", "kenlm"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ModelError(
            f"beam-search decoding needs {' and '.join(missing)}: pip install kenlm pygtrie && "
            "pip install --no-deps pyctcdecode (see docs/evaluation.md)")


def load_decoder(tokenizer: Any, lm: str | Path | None = None, alpha: float | None = None, beta: float | None = None,
                 unk_score_offset: float | None = None) -> Any:
    """A pyctcdecode `BeamSearchDecoderCTC` for `tokenizer`, with the n-gram LM found at `lm` (a
    decoder/model directory or its `language_model/` folder), or without an LM when `lm` is None.

    Pre-flight: a saved `alphabet.json` must equal the tokenizer's alphabet id for id, and the LM's
    words must be spelled with the tokenizer's characters; otherwise a one-line `ModelError`.
    """
    _require_decoder_libs()
    logging.getLogger("pyctcdecode").setLevel(logging.WARNING)  # it logs every alphabet substitution at INFO
    import kenlm
    from pyctcdecode import Alphabet, BeamSearchDecoderCTC, LanguageModel

    labels = tokenizer_labels(tokenizer)
    language_model = None
    if lm is not None:
        lm_dir = find_lm_dir(lm)
        if lm_dir is None:
            raise ModelError(f"{lm}: no language model here (expected {LM_DIR}/{ATTRS_FILE} and {UNIGRAMS_FILE}; "
                             "build one with scripts/build_lm.py)")
        alphabet_file = lm_dir.parent / ALPHABET_FILE if lm_dir.name == LM_DIR else lm_dir / ALPHABET_FILE
        if alphabet_file.is_file():
            saved = json.loads(alphabet_file.read_text(encoding="utf-8"))["labels"]
            if list(saved) != labels:
                diff = next((i for i, (a, b) in enumerate(zip(saved, labels, strict=False)) if a != b), min(len(saved), len(labels)))
                raise ModelError(
                    f"{alphabet_file}: the LM alphabet does not match the tokenizer ({len(saved)} vs {len(labels)} "
                    f"labels, first difference at id {diff}); rebuild it with scripts/build_lm.py --model MODEL")
        arpas = [f for f in sorted(lm_dir.iterdir()) if f.suffix in {".arpa", ".bin", ".binary"}]
        if len(arpas) != 1:
            raise ModelError(f"{lm_dir}: expected one .arpa/.bin KenLM file, found {[f.name for f in arpas]}")
        unigrams = (lm_dir / UNIGRAMS_FILE).read_text(encoding="utf-8").splitlines()
        check_alphabet(labels, unigrams, str(lm_dir))
        attrs = json.loads((lm_dir / ATTRS_FILE).read_text(encoding="utf-8"))
        for key, value in (("alpha", alpha), ("beta", beta), ("unk_score_offset", unk_score_offset)):
            if value is not None:
                attrs[key] = float(value)
        try:
            kmodel = kenlm.Model(str(arpas[0]))
        except (OSError, RuntimeError) as exc:
            raise ModelError(f"{arpas[0]}: KenLM cannot load it ({str(exc).splitlines()[0]})") from None
        language_model = LanguageModel(kmodel, unigrams, **attrs)
    alphabet = Alphabet.build_alphabet(list(tokenizer.convert_ids_to_tokens(list(range(len(labels))))))
    if list(alphabet.labels) != labels:  # pyctcdecode spells the alphabet its own way: use ours
        alphabet = Alphabet(labels, is_bpe(labels))
    return BeamSearchDecoderCTC(alphabet, language_model=language_model)


class BeamSearchTranscriber(Transcriber):
    """`Transcriber` (same length-sorted batching and masking) with CTC beam search per utterance."""

    def __init__(self, model: Any, feature_extractor: Any, tokenizer: Any, decoder: Any,
                 beam_width: int = DEFAULT_BEAM_WIDTH, **kwargs: Any) -> None:
        super().__init__(model, feature_extractor, tokenizer, **kwargs)
        self.decoder = decoder
        self.beam_width = int(beam_width)

    def word_ids(self, word: str) -> list[int]:
        """The token ids that spell one word (a character vocabulary's word delimiter left out)."""
        delimiter = getattr(self.tokenizer, "word_delimiter_token_id", None)
        return [i for i in self.tokenizer(word).input_ids if i != delimiter]

    def decode_frames(self, logits: Any) -> str:
        """Best beam for one utterance's (frames, vocab) logits (numpy or tensor)."""
        if isinstance(logits, torch.Tensor):
            logits = logits.float().cpu().numpy()
        if logits.shape[0] == 0:
            return ""
        return self.decoder.decode(logits, beam_width=self.beam_width).strip()

    @torch.inference_mode()
    def logits_to_text(self, logits: torch.Tensor, mask: torch.Tensor) -> list[str]:
        rows = logits.float().cpu()
        return [self.decode_frames(row[: int(m.sum())].numpy()) for row, m in zip(rows, mask.cpu(), strict=True)]

    @torch.inference_mode()
    def logits_to_words(self, logits: torch.Tensor, mask: torch.Tensor) -> list[Timed]:
        """The best beams with their words' frame spans (pyctcdecode's), in seconds."""
        out = []
        for row, m in zip(logits.float().cpu(), mask.cpu(), strict=True):
            frames = row[: int(m.sum())].numpy()
            if frames.shape[0] == 0:
                out.append(timed("", [], self.frame_seconds()))
                continue
            # prune_history as `decode` sets it, so that the text is `logits_to_text`'s
            text, _, words, *_ = self.decoder.decode_beams(frames, beam_width=self.beam_width, prune_history=True)[0]
            log_probs = torch.from_numpy(frames).log_softmax(-1)
            spans = [(w, s, e, aligned_confidence(log_probs[s:e], self.word_ids(w), self.blank)) for w, (s, e) in words]
            out.append(timed(text.strip(), spans, self.frame_seconds()))
        return out


def describe_decoder(decoder: str, lm: str | Path | None, beam_width: int, alpha: float | None, beta: float | None
                     ) -> dict[str, Any]:
    """What metrics.json records about decoding."""
    if decoder == "greedy":
        return {"decoder": "greedy"}
    info: dict[str, Any] = {"decoder": "beam", "beam_width": beam_width, "lm": str(lm) if lm else None}
    lm_dir = find_lm_dir(lm) if lm else None
    if lm_dir is not None:
        attrs = json.loads((lm_dir / ATTRS_FILE).read_text(encoding="utf-8"))
        info["alpha"] = float(alpha) if alpha is not None else attrs.get("alpha")
        info["beta"] = float(beta) if beta is not None else attrs.get("beta")
        info_file = (lm_dir.parent if lm_dir.name == LM_DIR else lm_dir) / INFO_FILE
        if info_file.is_file():
            meta = json.loads(info_file.read_text(encoding="utf-8"))
            info["lm_order"] = meta.get("order")
            info["lm_normalizer"] = meta.get("normalizer")
    return info


__all__ = [
    "NgramModel", "build_ngram_model", "write_arpa", "read_arpa", "tokenizer_labels", "check_alphabet",
    "build_lm_dir", "mark_model_dir", "find_lm_dir", "load_decoder", "BeamSearchTranscriber", "describe_decoder",
]
