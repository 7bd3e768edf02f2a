"""report.html renders in a real headless browser: plots decode, audio players load their files.

The page's own script writes ``data-images-loaded`` / ``data-audio-ok`` / ``data-audio-failed`` on
``<body>`` after the load event; ``chromium --dump-dom`` shows them. Skipped, with the reason, where
no Chromium/Chrome binary exists (CI installs Debian's ``chromium`` in .ci/run).
"""

from __future__ import annotations

import html.parser
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


class Sources(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.audio: list[str] = []
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"] or "")
        elif tag == "audio" and a.get("src"):
            self.audio.append(a["src"] or "")
        elif tag == "body":
            self.body = {k: v or "" for k, v in a.items()}


def parse(text: str) -> Sources:
    p = Sources()
    p.feed(text)
    return p


def resolve(src: str, base: Path) -> Path:
    if src.startswith("file://"):
        return Path(unquote(src[len("file://"):]))
    return base / unquote(src)


@pytest.fixture(scope="module")
def evaluation(trained_tiny_model: Path, tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from pipeline.config import DataSpec
    from pipeline.evaluation.evaluate import evaluate_model

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("report") / "eval"
    evaluate_model(str(trained_tiny_model), DataSpec(path=str(tiny_corpus / "test")), out, batch_seconds=8)
    return out


def dump_dom(browser: str, page: Path, profile: Path) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
           f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_report_files_resolve(evaluation: Path) -> None:
    from PIL import Image

    page = parse((evaluation / "report.html").read_text(encoding="utf-8"))
    assert len(page.images) == 3
    for src in page.images:
        with Image.open(resolve(src, evaluation)) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    with Image.open(evaluation / "summary.png") as im:
        assert im.format == "PNG" and im.size[0] > 300
        assert np.asarray(im.convert("L")).std() > 5  # not blank
    assert page.audio, "no audio players"
    for src in page.audio:
        path = resolve(src, evaluation)
        assert path.is_file() and sf.info(str(path)).frames > 0
        assert not path.resolve().is_relative_to(evaluation.resolve())  # pointed at, not copied


def test_report_escapes_text(tmp_path: Path) -> None:
    from pipeline.evaluation.alignment import align_words
    from pipeline.evaluation.report import render_html

    ref, hyp = "<script>alert(1)</script> & more", "<b>bold</b> & more"
    rows = [{"audio": "<img src=x>", "reference": ref, "hypothesis": hyp, "wer": 1.0, "word_errors": 2, "words": 3,
             "duration": 1.0, "speaker": "<i>spk</i>", "alignment": align_words(ref, hyp)}]
    text = render_html({"model": "<m>", "data": "d&d", "normalizer": "none"}, rows, tmp_path, {}, "speaker")
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>bold" not in text and "<i>spk" not in text and "&lt;m&gt;" in text and "d&amp;d" in text


def test_report_renders_in_headless_browser(evaluation: Path, tmp_path: Path) -> None:
    browser = find_browser()
    if browser is None:
        pytest.skip(f"no headless browser ({', '.join(BROWSERS)}) on PATH; apt-get install chromium")
    dom = dump_dom(browser, evaluation / "report.html", tmp_path / "profile")
    assert "<h1>" in dom and "Worst utterances" in dom and 'class="summary"' in dom
    body = parse(dom).body
    n_audio = len(parse((evaluation / "report.html").read_text(encoding="utf-8")).audio)
    assert body.get("data-images-loaded") == "3/3", body
    assert body.get("data-audio-ok") == f"{n_audio}/{n_audio}" and body.get("data-audio-failed") == "0", body

    # the check is not vacuous: a missing plot and a missing audio file are reported
    broken = tmp_path / "broken"
    shutil.copytree(evaluation, broken, ignore=shutil.ignore_patterns("*.jsonl"))
    (broken / "plots" / "top_errors.png").unlink()
    text = (broken / "report.html").read_text(encoding="utf-8")
    first = parse(text).audio[0]
    (broken / "report.html").write_text(text.replace(f'src="{first}"', 'src="missing.wav"', 1), encoding="utf-8")
    body = parse(dump_dom(browser, broken / "report.html", tmp_path / "profile2")).body
    assert body.get("data-images-loaded") == "2/3", body
    assert re.fullmatch(r"\d+/\d+", body.get("data-audio-ok", "")) and int(body.get("data-audio-failed", "0")) >= 1, body
