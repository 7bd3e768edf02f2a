"""`report.html`: one self-contained page to read an evaluation, plus `summary.png`.

The page (inline CSS, no network) holds a summary table (WER and CER with their 95% bootstrap
intervals, counts, normaliser, decoder), plots (WER by utterance duration, by speaker, the most
frequent error pairs; PNG files in ``plots/`` next to it), breakdown tables, and the worst
utterances, each with an ``<audio controls>`` player and its reference and hypothesis aligned
word by word (substitutions, deletions and insertions highlighted). Audio is never copied: players
point at the original files by a path relative to the report (or a ``file://`` URL when no relative
path exists). All text from data is escaped with `html.escape`.

A small script sets ``data-images-loaded`` ("ok/total") and ``data-audio-ok`` ("ok/total") on
``<body>`` once the images have decoded and the audio players have read their files' metadata,
so a headless browser can check that the page renders (tests/test_report_browser.py).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.evaluation.alignment import DEL, HIT, INS, SUB, error_pairs

PLOTS_DIR = "plots"
WORST_N = 20

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2em auto;max-width:1100px;
 color:#222;padding:0 1em;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.muted{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;
 vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots img{max-width:100%;border:1px solid #eee;margin:.3em 0}
.utt{border:1px solid #ddd;border-radius:6px;padding:.6em .8em;margin:.8em 0}
.utt .head{display:flex;gap:1em;align-items:center;flex-wrap:wrap}
.align{margin-top:.5em;display:flex;flex-wrap:wrap;gap:.15em .35em;font-family:ui-monospace,Menlo,Consolas,monospace}
.op{display:inline-flex;flex-direction:column;padding:0 .15em;border-radius:3px}
.op span{white-space:pre}.op .h{border-top:1px dotted #ccc}
.op.S{background:#fde2b8}.op.D{background:#f8c9c9}.op.I{background:#cfe3fb}
.op.D .h,.op.I .r{color:#999}
.legend span{padding:0 .4em;border-radius:3px;margin-right:.5em}
.k-S{background:#fde2b8}.k-D{background:#f8c9c9}.k-I{background:#cfe3fb}
.labels{font-size:.75em;color:#888;display:inline-flex;flex-direction:column;margin-right:.3em}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var body = document.body, imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  body.dataset.imagesLoaded = ok + '/' + imgs.length;
  var auds = document.querySelectorAll('audio'), loaded = 0, failed = 0;
  function show() { body.dataset.audioOk = loaded + '/' + auds.length; body.dataset.audioFailed = String(failed); }
  show();
  auds.forEach(function (a) {
    if (a.readyState >= 1) { loaded++; show(); return; }
    a.addEventListener('loadedmetadata', function () { loaded++; show(); });
    a.addEventListener('error', function () { failed++; show(); });
    a.load();
  });
});
"""


def _esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _pct(x: float | None) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return f"{100 * x:.2f}%"


def _ci(ci: Sequence[float] | None) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "–"


def audio_src(audio: str | None, out_dir: Path) -> str | None:
    """A URL for an audio file from the report's folder: relative path, else file:// URL; None if no file."""
    if not audio or audio == "None":
        return None
    path = Path(audio)
    if not path.is_file():
        return None
    try:
        rel = os.path.relpath(path.resolve(), out_dir.resolve())
        return quote(Path(rel).as_posix())
    except ValueError:  # another drive (Windows)
        return path.resolve().as_uri()


def aligned_html(alignment: Sequence[Sequence[Any]]) -> str:
    """Reference over hypothesis, word by word; S/D/I ops get a class (and a title) to colour them."""
    names = {HIT: "correct", SUB: "substitution", DEL: "deletion", INS: "insertion"}
    cells = ['<span class="labels"><span>REF</span><span>HYP</span></span>']
    for op, ref, hyp in alignment:
        r = _esc(ref) if ref is not None else "*" * max(1, len(str(hyp or "")))
        h = _esc(hyp) if hyp is not None else "*" * max(1, len(str(ref or "")))
        cls = "op" if op == HIT else f"op {op}"
        cells.append(f'<span class="{cls}" title="{names.get(op, op)}"><span class="r">{r}</span>'
                     f'<span class="h">{h}</span></span>')
    return '<div class="align">' + "".join(cells) + "</div>"


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------
def _bar(ax: Any, labels: Sequence[str], values: Sequence[float], title: str, xlabel: str, horizontal: bool,
         notes: Sequence[str] | None = None) -> None:
    if not labels:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_axis_off()
        return
    pos = range(len(labels))
    if horizontal:
        bars = ax.barh(list(pos), values, color="#4c78a8")
        ax.set_yticks(list(pos), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
    else:
        bars = ax.bar(list(pos), values, color="#4c78a8")
        ax.set_xticks(list(pos), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(xlabel)
    if notes:
        for bar, note in zip(bars, notes, strict=True):
            if horizontal:
                ax.annotate(note, (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(3, 0),
                            textcoords="offset points", va="center", fontsize=7)
            else:
                ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 2),
                            textcoords="offset points", ha="center", fontsize=7)
    from matplotlib.ticker import MaxNLocator

    if horizontal:
        ax.margins(x=0.12)
        if all(float(v).is_integer() for v in values):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.margins(y=0.1)
    ax.set_title(title)
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)


def _finite_pct(x: float | None) -> float:
    return 0.0 if x is None or not math.isfinite(x) else 100 * x


def _plot_specs(metrics: dict[str, Any], group_column: str) -> list[tuple[str, dict[str, Any]]]:
    dur = metrics.get("by_duration") or []
    groups = (metrics.get(f"by_{group_column}") or [])[:25]
    pairs = error_pairs(metrics.get("top_errors") or {}, k=15)
    return [
        ("wer_by_duration", dict(labels=[d["bin"] for d in dur], values=[_finite_pct(d["wer"]) for d in dur],
                                 title="WER by utterance duration", xlabel="WER (%)", horizontal=False,
                                 notes=[f"n={d['utterances']}" for d in dur])),
        (f"wer_by_{group_column}", dict(labels=[str(g[group_column]) for g in groups],
                                        values=[_finite_pct(g["wer"]) for g in groups],
                                        title=f"WER by {group_column} (worst {len(groups)})", xlabel="WER (%)",
                                        horizontal=True, notes=[f"n={g['utterances']}" for g in groups])),
        ("top_errors", dict(labels=[p[0] for p in pairs], values=[p[1] for p in pairs],
                            title="Most frequent errors (ref → hyp)", xlabel="count", horizontal=True)),
    ]


def write_plots(out_dir: Path, metrics: dict[str, Any], group_column: str = "speaker") -> dict[str, str]:
    """One PNG per plot under ``plots/`` and all of them side by side in ``summary.png``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    specs = _plot_specs(metrics, group_column)
    (out_dir / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    files = {}
    for name, spec in specs:
        height = 3.5 if not spec["horizontal"] else max(3.0, 0.28 * len(spec["labels"]) + 1.2)
        fig, ax = plt.subplots(figsize=(7, height), dpi=100)
        _bar(ax, **spec)
        fig.tight_layout()
        rel = f"{PLOTS_DIR}/{name}.png"
        fig.savefig(out_dir / rel)
        plt.close(fig)
        files[name] = rel
    n = max([len(s["labels"]) for _, s in specs[1:]] + [8])
    fig, axes = plt.subplots(1, len(specs), figsize=(6 * len(specs), max(4.0, 0.28 * n + 1.5)), dpi=90)
    for ax, (_, spec) in zip(axes, specs, strict=True):
        _bar(ax, **spec)
    title = f"WER {_pct(metrics.get('wer'))} {_ci(metrics.get('wer_ci95'))}   CER {_pct(metrics.get('cer'))} " \
            f"{_ci(metrics.get('cer_ci95'))}   {metrics.get('num_utterances', 0)} utterances"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_dir / "summary.png")
    plt.close(fig)
    return files


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------
def _summary_table(m: dict[str, Any]) -> str:
    rows = [
        ("WER", f"{_pct(m.get('wer'))} <span class=muted>95% CI {_esc(_ci(m.get('wer_ci95')))}</span>"),
        ("CER", f"{_pct(m.get('cer'))} <span class=muted>95% CI {_esc(_ci(m.get('cer_ci95')))}</span>"),
        ("Utterances", _esc(m.get("num_utterances"))),
        ("Reference words / characters", f"{_esc(m.get('reference_words'))} / {_esc(m.get('reference_chars'))}"),
        ("Substitutions / deletions / insertions",
         f"{_esc(m.get('substitutions'))} / {_esc(m.get('deletions'))} / {_esc(m.get('insertions'))}"),
        ("Audio", f"{_esc(m.get('audio_hours'))} h"),
        ("Normaliser", _esc(m.get("normalizer"))),
        ("Decoder", _esc(", ".join(f"{k}={v}" for k, v in (m.get("decoding") or {"decoder": "greedy"}).items()))),
        ("Confidence intervals", _esc(m.get("ci_method"))),
        ("Model", _esc(m.get("model"))),
        ("Data", _esc(m.get("data"))),
        ("Skipped rows", _esc(m.get("skipped_rows"))),
    ]
    return "<table class=summary>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _group_table(groups: Sequence[dict[str, Any]], key: str, label: str) -> str:
    if not groups:
        return f"<p class=muted>No {_esc(label)} information.</p>"
    head = f"<tr><th>{_esc(label)}</th><th>utterances</th><th>words</th><th>WER</th><th>CER</th><th>seconds</th></tr>"
    body = "".join(
        f"<tr><td>{_esc(g[key])}</td><td class=num>{g['utterances']}</td><td class=num>{g['words']}</td>"
        f"<td class=num>{_pct(g['wer'])}</td><td class=num>{_pct(g['cer'])}</td><td class=num>{g['seconds']}</td></tr>"
        for g in groups)
    return f"<table>{head}{body}</table>"


def _errors_table(top: dict[str, list[dict[str, Any]]], k: int = 15) -> str:
    def col(items: list[dict[str, Any]], fmt: Any) -> list[str]:
        return [f"{fmt(e)} <span class=muted>×{e['count']}</span>" for e in items[:k]]

    subs = col(top.get("substitutions", []), lambda e: f"{_esc(e['ref'])} → {_esc(e['hyp'])}")
    dels = col(top.get("deletions", []), lambda e: _esc(e["ref"]))
    ins = col(top.get("insertions", []), lambda e: _esc(e["hyp"]))
    n = max(len(subs), len(dels), len(ins))
    if n == 0:
        return "<p class=muted>No errors.</p>"
    rows = "".join(
        "<tr>" + "".join(f"<td>{c[i] if i < len(c) else ''}</td>" for c in (subs, dels, ins)) + "</tr>"
        for i in range(n))
    return f"<table><tr><th>substitutions (ref → hyp)</th><th>deletions</th><th>insertions</th></tr>{rows}</table>"


def worst_utterances(rows: Sequence[dict[str, Any]], n: int = WORST_N) -> list[dict[str, Any]]:
    """Rows with errors, by utterance WER then by error count (worst first)."""
    bad = [r for r in rows if r.get("word_errors", 0) > 0]
    return sorted(bad, key=lambda r: (-float(r.get("wer") or 0.0), -int(r["word_errors"]), str(r.get("audio"))))[:n]


def _utterance(r: dict[str, Any], out_dir: Path, group_column: str) -> str:
    src = audio_src(r.get("audio"), out_dir)
    player = (f'<audio controls preload="metadata" src="{_esc(src)}"></audio>' if src
              else '<span class=muted>(audio not available as a file)</span>')
    alignment = r.get("alignment") or []
    extra = f" · {_esc(group_column)} {_esc(r.get(group_column))}" if r.get(group_column) else ""
    return (
        f'<div class=utt><div class=head><b>WER {_pct(r.get("wer"))}</b>'
        f'<span class=muted>{r.get("word_errors")} errors / {r.get("words")} words · {r.get("duration")} s{extra}</span>'
        f'{player}</div><div class=muted title="audio">{_esc(r.get("audio"))}</div>{aligned_html(alignment)}</div>'
    )


def render_html(metrics: dict[str, Any], rows: Sequence[dict[str, Any]], out_dir: Path, plots: dict[str, str],
                group_column: str = "speaker", worst_n: int = WORST_N) -> str:
    title = f"Evaluation: {metrics.get('model', '')} on {metrics.get('data', '')}"
    worst = worst_utterances(rows, worst_n)
    imgs = "".join(f'<img src="{_esc(quote(src))}" alt="{_esc(name.replace("_", " "))}">' for name, src in plots.items())
    legend = ('<p class=legend>Aligned reference (top) and hypothesis (bottom): '
              '<span class=k-S>substitution</span><span class=k-D>deletion (*** in HYP)</span>'
              '<span class=k-I>insertion (*** in REF)</span></p>')
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f"<p class=muted>WER = (substitutions + deletions + insertions) / reference words, after the "
        f"<b>{_esc(metrics.get('normalizer'))}</b> normaliser on references and hypotheses.</p>",
        "<h2 id=summary>Summary</h2>", _summary_table(metrics),
        f"<h2 id=plots>Plots</h2><div class=plots>{imgs}</div>",
        "<h2 id=duration>By utterance duration</h2>",
        _group_table(metrics.get("by_duration") or [], "bin", "duration"),
        f"<h2 id=groups>By {_esc(group_column)}</h2>",
        _group_table(metrics.get(f"by_{group_column}") or [], group_column, group_column),
        "<h2 id=errors>Most frequent errors</h2>", _errors_table(metrics.get("top_errors") or {}),
        f"<h2 id=worst>Worst utterances ({len(worst)} shown)</h2>", legend,
        "".join(_utterance(r, out_dir, group_column) for r in worst) or "<p class=muted>No errors.</p>",
        f"<script>{_SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts)


def write_report(out_dir: str | Path, metrics: dict[str, Any], rows: Sequence[dict[str, Any]],
                 group_column: str = "speaker", worst_n: int = WORST_N) -> Path:
    """Write ``report.html``, ``summary.png`` and ``plots/*.png`` into `out_dir`; returns the page's path."""
    from pipeline.io import write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(out, metrics, group_column)
    path = out / "report.html"
    write_text(path, render_html(metrics, rows, out, plots, group_column, worst_n))
    return path
