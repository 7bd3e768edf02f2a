#!/usr/bin/env python
"""Build a word n-gram language model (interpolated modified Kneser-Ney, ARPA) for CTC beam search,
offline and without KenLM's binaries.

The text is a plain text file (one sentence per line) or a data spec whose transcripts are used
(a folder with metadata.csv, a .csv/.jsonl manifest, or a Hub dataset name with --split): use the
*train* transcripts, never the test set's. Lines are normalised with the model's normaliser (or
--normalizer). The output folder gets the layout `transformers.pipeline` and pyctcdecode load
(alphabet.json, language_model/{lm.arpa,attrs.json,unigrams.txt}) and lm_info.json. With --output
equal to the model directory, `transformers.pipeline(model=DIR)` decodes with the LM.

Examples:
  python scripts/build_lm.py --text data/synth/train --model runs/quickstart --order 3 --output runs/quickstart/lm
  python scripts/build_lm.py --text data/synth/train --model runs/quickstart --output runs/quickstart
  python scripts/build_lm.py --text corpus.txt --normalizer default --order 4 --output lm4
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline.cli import entry_point, setup_logging
from pipeline.data.sources import read_sentences
from pipeline.errors import DataError

logger = logging.getLogger("build_lm")


@entry_point
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", required=True, help="text file (one sentence a line) or data spec (train transcripts)")
    p.add_argument("--output", required=True, help="output folder (a model directory installs the LM into it)")
    p.add_argument("--order", type=int, default=3, help="n-gram order (>= 2; default 3)")
    p.add_argument("--model", help="model directory: its tokenizer gives the alphabet (checked) and its normaliser")
    p.add_argument("--normalizer", help="default | english | none (default: the model's, else default)")
    p.add_argument("--split", help="Hub split or sub-folder of --text")
    p.add_argument("--config", help="Hub dataset configuration")
    p.add_argument("--text-column", default="text")
    p.add_argument("--alpha", type=float, default=0.5, help="LM weight stored in attrs.json")
    p.add_argument("--beta", type=float, default=1.5, help="word insertion bonus stored in attrs.json")
    a = p.parse_args()
    setup_logging()
    from pipeline.data.text import get_normalizer
    from pipeline.evaluation.lm import build_lm_dir, tokenizer_labels

    if a.order < 2:
        raise DataError("--order must be at least 2 (KenLM loads bigram and higher models only)")
    labels, normalizer = None, a.normalizer
    if a.model:
        from transformers import AutoTokenizer

        from pipeline.errors import ModelError

        try:
            tok = AutoTokenizer.from_pretrained(a.model)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{a.model}: cannot load the tokenizer ({str(exc).splitlines()[0]})") from None
        labels = tokenizer_labels(tok)
        meta = Path(a.model) / "speech_pipeline.json"
        if normalizer is None and meta.is_file():
            normalizer = json.loads(meta.read_text(encoding="utf-8")).get("normalizer")
    normalizer = normalizer or "default"
    sentences = read_sentences(a.text, get_normalizer(normalizer), a.split, a.config, a.text_column)
    if not sentences:
        raise DataError(f"{a.text}: no text after normalisation")
    try:
        info = build_lm_dir(sentences, a.output, order=a.order, labels=labels, alpha=a.alpha, beta=a.beta,
                            info={"normalizer": normalizer, "source": str(a.text), "model": a.model})
    except ValueError as exc:
        raise DataError(str(exc)) from None
    print(json.dumps({"output": str(a.output), **{k: info[k] for k in ("order", "ngrams", "sentences", "vocabulary",
                                                                       "words_replaced_by_unk", "normalizer")}}))


if __name__ == "__main__":
    main()
