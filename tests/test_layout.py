"""The dependency direction and the pure core, checked on the source (``ast``):

* ``optimizer/`` imports nothing of ours but itself, and no process effects (no ``os``,
  ``subprocess``, ``multiprocessing``, ``threading``, ``signal``, ``socket``): forks, file
  descriptors and threads live in the app shell (``trueup/``).
* ``adapters/`` and ``forecasts/`` import ``optimizer`` and themselves, never ``trueup``
  nor each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"optimizer", "adapters", "forecasts", "trueup", "tests", "bench"}
ALLOWED = {"optimizer": {"optimizer"}, "adapters": {"optimizer", "adapters"},
           "forecasts": {"optimizer", "forecasts"}}
PROCESS_EFFECTS = {"os", "subprocess", "multiprocessing", "threading", "signal", "socket"}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every import in ``path``, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_lies_below_it(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    bad = [f"{f.relative_to(ROOT)}:{line} imports {mod}" for f in files
           for line, mod in imports(f) if mod in OURS and mod not in ALLOWED[package]]
    assert bad == []


def test_the_pure_core_has_no_process_effects():
    bad = [f"{f.relative_to(ROOT)}:{line} imports {mod}"
           for f in sorted((ROOT / "optimizer").rglob("*.py"))
           for line, mod in imports(f) if mod in PROCESS_EFFECTS]
    assert bad == []


def test_the_check_itself_sees_a_forbidden_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    import os\n    from trueup.config import load_config\n")
    assert imports(f) == [(2, "os"), (3, "trueup")]


def test_the_product_points_only_to_files_in_the_repository():
    """README, docs, --help and messages are read by owners who have only the clone: no
    team notes outside it, no tracker numbers of ours, no section marks of a notes file."""
    import re

    bad = re.compile(r"shared/|DOMAIN\.md|ARCHITECTURE\.md|issue [0-9]|§\s*[0-9]\.[0-9]")
    files = [ROOT / "README.md"] + [p for d in ("docs", "trueup", "optimizer", "adapters",
                                                "forecasts")
                                    for p in (ROOT / d).rglob("*") if p.is_file()
                                    and p.suffix in {".md", ".py", ".toml", ".txt"}]
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in files
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if bad.search(line)]
    assert not hits, "\n".join(hits)
