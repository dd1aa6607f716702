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


def _layout_block() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("<!-- layout:start -->", 1)[1].split("<!-- layout:end -->", 1)[0]
    return [line.split()[0] for line in block.splitlines() if line.strip() and line[0] != "`"]


def test_architecture_lists_every_module_once():
    """docs/architecture.md has one line per module, and only modules that exist."""
    listed = _layout_block()
    on_disk = {
        str(p.relative_to(ROOT))
        for top in ("pipelines", "transforms", "benchmarks", "examples")
        for p in (ROOT / top).rglob("*.py")
        if not (p.name == "__init__.py" and not p.read_text().strip())
    }
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert not on_disk - set(listed), (
        f"not in docs/architecture.md: {sorted(on_disk - set(listed))}"
    )
    assert not set(listed) - on_disk, f"listed but gone: {sorted(set(listed) - on_disk)}"
