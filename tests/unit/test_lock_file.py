"""requirements.lock (what the Docker image installs) covers pyproject's pins, with hashes, and no development broker."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked(text: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of every entry of a ``--generate-hashes`` requirements file."""
    entries: dict[str, tuple[str, int]] = {}
    current = None
    for line in text.splitlines():
        match = _ENTRY.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            entries[current] = (match.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = entries[current]
            entries[current] = (version, hashes + 1)
        elif not line.startswith((" ", "\t")):
            current = None
    return entries


def uncovered(requirements: list[str], entries: dict[str, tuple[str, int]]) -> list[str]:
    """Pins of ``requirements`` the lock lacks or holds at another version (extras' packages must be there too)."""
    missing = []
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        pinned = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if name not in entries or (pinned and entries[name][0] != pinned[0]):
            missing.append(text)
        missing.extend(f"{text} (extra {extra})" for extra in requirement.extras if canonicalize_name(extra) not in entries)
    return missing


def test_the_helpers_catch_a_stale_lock() -> None:
    text = "aiohttp==3.14.5 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via salespulse\nhiredis==3.5.0\n"
    entries = locked(text)
    assert entries == {"aiohttp": ("3.14.5", 2), "hiredis": ("3.5.0", 0)}
    assert uncovered(["aiohttp==3.14.6", "redis[hiredis]==8.1.0", "hiredis==3.5.0"], entries) == [
        "aiohttp==3.14.6",
        "redis[hiredis]==8.1.0",
    ]


def test_every_pinned_core_dependency_is_locked_at_its_pin() -> None:
    dependencies = PYPROJECT["project"]["dependencies"]
    assert all("==" in d for d in dependencies), "pin every core dependency with == (the brief)"
    assert uncovered(dependencies, locked(LOCK.read_text())) == [], (
        "requirements.lock is stale: regenerate it (the command is in its header and in docs/operations.md)"
    )


def test_every_locked_package_has_a_hash() -> None:
    entries = locked(LOCK.read_text())
    assert len(entries) > len(PYPROJECT["project"]["dependencies"])
    assert [name for name, (_, hashes) in entries.items() if hashes == 0] == []


def test_the_lock_carries_no_development_broker_nor_test_tool() -> None:
    entries = locked(LOCK.read_text())
    for extra in ("embedded", "test"):
        for text in PYPROJECT["project"]["optional-dependencies"][extra]:
            name = canonicalize_name(Requirement(text).name)
            assert name not in entries or name in {canonicalize_name(Requirement(d).name)
                                                   for d in PYPROJECT["project"]["dependencies"]}, name


def test_the_lock_is_resolved_for_the_images_python() -> None:
    lines = LOCK.read_text().splitlines()
    header = "\n".join(lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))])
    base = re.search(r"^FROM python:(\d+\.\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert base and f"--python-version {base.group(1)}" in header, header
    assert "--universal" in header, "the image is built for amd64 and arm64: resolve for every platform"
