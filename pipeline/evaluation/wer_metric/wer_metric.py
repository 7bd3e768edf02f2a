"""WER and CER as an `evaluate` metric, computed exactly as speech-pipeline's evaluation does.

References and predictions are normalised with one of speech-pipeline's normalisers (``default``,
``english``, ``none``; see `pipeline.data.text`) and scored with `pipeline.evaluation.metrics.
error_rates`: corpus rates (S + D + I) / N summed over utterances, as jiwer 4 computes them.

Load it offline (no Hub access):

    from pipeline.evaluation import load_wer_metric
    metric = load_wer_metric()          # = evaluate.load("/abs/path/to/pipeline/evaluation/wer_metric")
    metric.compute(predictions=["hello world"], references=["Hello, world!"], normalizer="default")
    # {'wer': 0.0, 'cer': 0.0, ...}
"""

import datasets
import evaluate

from pipeline.data.text import get_normalizer
from pipeline.evaluation.metrics import error_rates

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of hypothesis transcripts.
    references: list of reference transcripts (same length).
    normalizer: "default" (lower-case, punctuation removed), "english" (default + contractions and digits
        spelled out) or "none" (as written). Applied to both sides.
Returns:
    wer, cer: corpus word and character error rates (fractions, not percent);
    substitutions, deletions, insertions, reference_words: word-level counts;
    reference_chars: number of reference characters; num_utterances.
"""


class WerMetric(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("string"),
                "references": datasets.Value("string"),
            }),
            reference_urls=["https://github.com/jitsi/jiwer"],
        )

    def _compute(self, predictions=None, references=None, normalizer="default"):
        normalize = get_normalizer(normalizer)
        rates = error_rates([normalize(r) for r in references], [normalize(p) for p in predictions])
        keys = ("wer", "cer", "substitutions", "deletions", "insertions", "reference_words", "reference_chars",
                "num_utterances")
        return {k: rates[k] for k in keys}
