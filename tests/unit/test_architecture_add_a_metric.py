"""docs/architecture.md's "Adding a metric" diff is what the code holds: each file it names has the lines it
adds, in order and contiguous with their context, and the diff touches only a rule and a spec line."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"


def hunks() -> dict[str, list[list[str]]]:
    """File -> hunks, each the new side's lines (context and added, without their prefix)."""
    section = DOC.read_text().split("## Adding a metric", 1)[1].split("\n## ", 1)[0]
    diff = re.search(r"```diff\n(.*?)```", section, re.S)
    assert diff is not None, "the section has no diff"
    out: dict[str, list[list[str]]] = {}
    current: list[str] | None = None
    path = ""
    for line in diff.group(1).splitlines():
        if line.startswith("+++ b/"):
            path = line[len("+++ b/"):]
            out[path] = []
        elif line.startswith("@@"):
            current = []
            out[path].append(current)
        elif line.startswith("---"):
            continue
        elif current is not None and not line.startswith("-"):
            current.append(line[1:])
    return out


def test_the_add_a_metric_diff_is_one_rule_and_one_spec_line_and_the_code_holds_it() -> None:
    found = hunks()
    assert set(found) == {"salespulse/families/pipeline/rules.py", "salespulse/families/pipeline/spec.py"}
    added = [line for line in DOC.read_text().split("```diff", 1)[1].split("```", 1)[0].splitlines()
             if line.startswith("+") and not line.startswith("+++")]
    assert sum("Field(" in line for line in added) == 1  # one spec line
    for path, file_hunks in found.items():
        text = (ROOT / path).read_text()
        for hunk in file_hunks:
            assert "\n".join(hunk) in text, f"{path} no longer holds this hunk of the doc's diff:\n" + "\n".join(hunk)
