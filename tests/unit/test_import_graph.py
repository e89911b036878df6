"""The flow reads one way: ingest (handlers) -> engine -> families -> outputs. No import runs back up."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "salespulse"
#: Layer -> the layers it must not import (those before it in the flow, and ingest for everyone).
FORBIDDEN: dict[str, set[str]] = {
    "handlers": {"engine", "families", "outputs"},
    "engine": {"handlers"},
    "families": {"handlers", "engine"},
    "outputs": {"handlers", "engine", "families"},
}


def _imports(path: Path) -> set[str]:
    """Every ``salespulse.*`` module a file imports (``TYPE_CHECKING`` imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("salespulse.")}


def _violations(layer: str) -> list[str]:
    out = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for module in sorted(_imports(path)):
            target = module.split(".")[1]
            if target in FORBIDDEN[layer]:
                out.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_a_layer_before_it_in_the_flow(layer: str) -> None:
    assert _violations(layer) == []


def test_the_check_sees_an_import_that_runs_back_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "salespulse"
    (package / "outputs").mkdir(parents=True)
    (package / "outputs" / "bad.py").write_text("from salespulse.families.spec import FamilySpec\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert _violations("outputs") == [
        "salespulse/outputs/bad.py imports salespulse.families.spec",
        "salespulse/outputs/bad.py imports salespulse.families.spec.FamilySpec",
    ]
