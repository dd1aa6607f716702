"""The README stays a short front page; the manual lives in docs/ and its links resolve."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_opens_with_the_two_commands_and_stays_short():
    text = (ROOT / "README.md").read_text()
    head = "\n".join(text.splitlines()[:8])
    assert "make demo" in head and "make test" in head
    assert len(text.splitlines()) <= 150


def test_relative_links_resolve():
    for doc in DOCS:
        prose = re.sub(r"`[^`]*`", "", doc.read_text())  # not inside inline code
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_code_fences_are_balanced():
    for doc in DOCS:
        fences = [line for line in doc.read_text().splitlines() if line.startswith("```")]
        assert len(fences) % 2 == 0, f"{doc.name} has an unclosed code block"
