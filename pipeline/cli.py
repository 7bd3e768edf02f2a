"""Shared entry-point behaviour: user errors print one line and exit 2, never a traceback."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from pipeline.errors import PipelineError


def entry_point(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            close_progress_bars()  # the error gets a line of its own, not the end of a bar's
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper


def close_progress_bars() -> None:
    """Close the tqdm bars still open (an error raised mid-loop), so that nothing follows on their line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("datasets", "transformers", "accelerate", "httpx", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
