"""The `evaluate` metric module (``wer_metric.py``): load it with `pipeline.evaluation.load_wer_metric()`."""
