"""Code-structure rules from the architecture issue, checked on every module we ship.

- No module imports a private (``_name``) name from another of our modules.
- No module is much over 400 lines unless its docstring says why
  ("Longer than 400 lines because ...").
- Pure stage modules stay free of Beam: only the Beam wiring modules (those defining a DoFn,
  PTransform, CombineFn or ModelHandler) import apache_beam beyond its file systems.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("pipelines", "transforms")
MAX_LINES = 420  # "about 400"
SIZE_REASON = "Longer than 400 lines because"


def _modules() -> list[Path]:
    return sorted(p for top in SHIPPED for p in (ROOT / top).rglob("*.py"))


def _private_imports(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_batch_score"):
            found += [
                f"{path.relative_to(root)}:{node.lineno} imports {a.name} from {node.module}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
    return found


def test_no_module_imports_a_private_name_from_another():
    offenders = [line for path in _modules() for line in _private_imports(path)]
    assert not offenders, "make the name public or move it:\n" + "\n".join(offenders)


def test_the_private_import_check_catches_one(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("from keras_batch_score.transforms.core import batch\n"
                   "def f():\n    from keras_batch_score.transforms.model.load import _hidden\n")  # fmt: skip
    (found,) = _private_imports(bad, root=tmp_path)
    assert found == "m.py:3 imports _hidden from keras_batch_score.transforms.model.load"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_size(path: Path):
    rel = str(path.relative_to(ROOT))
    lines = len(path.read_text().splitlines())
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert lines <= MAX_LINES or SIZE_REASON in docstring, (
        f"{rel} has {lines} lines: split it, or state at its top '{SIZE_REASON} ...'"
    )


# What a pure module may still take from Beam: its file-system layer (local, gs://) and
# the per-process shared-object cache. Anything else marks Beam wiring, which must define
# a DoFn, PTransform, CombineFn, ModelHandler or Coder of its own.
BEAM_LIBRARIES = ("apache_beam.io.filesystem", "apache_beam.io.filesystems", "apache_beam.utils")
BEAM_BASES = ("DoFn", "PTransform", "CombineFn", "ModelHandler", "Coder")


def _beam_use(path: Path) -> tuple[list[str], list[str]]:
    """(apache_beam imports at module level beyond BEAM_LIBRARIES, Beam classes defined)."""
    tree = ast.parse(path.read_text())
    imports = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            imports += [a.name for a in node.names if a.name.startswith("apache_beam")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("apache_beam"):
            imports.append(node.module)
    wiring = [n.name for n in tree.body if isinstance(n, ast.ClassDef)
              and any(ast.unparse(b).split(".")[-1] in BEAM_BASES for b in n.bases)]  # fmt: skip
    return [m for m in imports if m not in BEAM_LIBRARIES], wiring


@pytest.mark.parametrize(
    "path", sorted((ROOT / "transforms").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_only_beam_wiring_modules_import_beam(path: Path):
    imports, wiring = _beam_use(path)
    assert not imports or wiring, (
        f"{path.relative_to(ROOT)} imports {imports} but defines no DoFn/PTransform/CombineFn: "
        "keep pure code free of Beam, or move the Beam part to the stage's wiring module"
    )


def test_the_beam_check_tells_wiring_from_pure(tmp_path):
    pure = tmp_path / "pure.py"
    pure.write_text("import apache_beam as beam\n\ndef f():\n    return beam\n")
    assert _beam_use(pure) == (["apache_beam"], [])
    wiring = tmp_path / "wiring.py"
    wiring.write_text("import apache_beam as beam\n\nclass F(beam.DoFn):\n    pass\n")
    assert _beam_use(wiring) == (["apache_beam"], ["F"])
    files = tmp_path / "files.py"
    files.write_text("from apache_beam.io.filesystems import FileSystems\n")
    assert _beam_use(files) == ([], [])
