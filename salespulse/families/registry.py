"""The metric families a worker can run: name -> the module that builds it, in rendering order.

A new family is one folder (``families/<name>/``: ``rules.py``, ``spec.py``, ``family.py`` and ``build.py``)
and one line here. The modules are named, not imported, so that settings can list the names without
loading every family; ``load`` imports one when a worker builds it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from salespulse.families.context import FamilyContext
    from salespulse.families.spec import FamilySpec
    from salespulse.families.windowed import WindowedFamily

FAMILIES: dict[str, str] = {
    "activity": "salespulse.families.activity.build",
    "lead_response": "salespulse.families.lead_response.build",
    "pipeline": "salespulse.families.pipeline.build",
    "engagement": "salespulse.families.engagement.build",
}
NAMES: tuple[str, ...] = tuple(FAMILIES)


@dataclass(frozen=True)
class Entry:
    """A registered family: its declaration and how to build it from the worker's context."""

    spec: FamilySpec
    build: Callable[[FamilyContext], WindowedFamily]


def load(name: str) -> Entry:
    """The registry entry of one family (``KeyError`` for an unknown name)."""
    module = importlib.import_module(FAMILIES[name])
    return Entry(module.SPEC, module.build)


def specs() -> dict[str, FamilySpec]:
    """Every family's spec, in registry order (schemas, docs)."""
    return {name: load(name).spec for name in FAMILIES}
