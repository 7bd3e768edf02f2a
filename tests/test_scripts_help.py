"""The scripts' --help shows their examples as written: a docstring line ending in a single backslash is
a line continuation to Python, so the example's next line would be glued onto it in the help text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_docstring_examples_keep_their_line_breaks(script: Path) -> None:
    source = script.read_text(encoding="utf-8")
    tree = ast.parse(source)
    assert tree.body and isinstance(tree.body[0], ast.Expr), f"{script.name}: no module docstring (argparse help)"
    raw = ast.get_source_segment(source, tree.body[0]) or ""
    glued = [line for line in raw.splitlines() if re.search(r"(?<!\\)(\\\\)*\\$", line)]
    assert not glued, f"{script.name}: write '\\\\' at the end of these docstring lines: {glued}"
    assert "\n" in (ast.get_docstring(tree) or ""), f"{script.name}: the docstring is a single line"
