"""The field and Prometheus series tables of docs/metrics.md, generated from the family specs.

``python -m salespulse.families.docs`` rewrites them in place; tests/unit/test_family_specs.py fails
when they are stale. Each table sits between ``<!-- spec:<family> -->`` and ``<!-- /spec:<family> -->``;
a family without one gets a new section at the end.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from salespulse.families.registry import specs

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def render(text: str) -> str:
    """``text`` with every family's table replaced by the one its spec gives."""
    for name, spec in specs().items():
        block = f"<!-- spec:{name} -->\n{spec.docs_table()}\n<!-- /spec:{name} -->"
        pattern = re.compile(rf"<!-- spec:{name} -->.*?<!-- /spec:{name} -->", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _m: block, text)
        else:  # a new family: its section goes at the end, to be given prose by hand
            text = f"{text.rstrip()}\n\n### {name}\n\n{block}\n"
    return text


def main() -> int:
    DOC.write_text(render(DOC.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
