"""The provisioned Grafana dashboard as data: its panels, their PromQL targets, its template variables.

Shared by test_compose.py (static checks) and test_prometheus_e2e.py (the queries against a real Prometheus).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "salespulse.json"

#: Grafana's global variables the panels use, with what a test substitutes for them.
GLOBAL_VARIABLES = ("__range", "__rate_interval", "__interval")

_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<selector>.+?)\s*,\s*(?P<label>\w+)\s*\)\s*$")
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$")
#: The datasource reference of every panel, target and query variable: the dashboard's datasource variable.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: What the range guard appends to a difference over ``offset <window>`` (``{window}`` filled in).
RANGE_GUARD = "and on () (count(salespulse_worker_partitions_owned offset {window}) > 0)"
_METRIC = re.compile(r"\b(salespulse_[a-z0-9_]+)")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


@dataclass(frozen=True)
class Target:
    panel: str
    ref_id: str
    expr: str
    instant: bool


@dataclass(frozen=True)
class Variable:
    name: str
    type: str
    multi: bool
    include_all: bool
    query: str  # label_values(...) / query_result(...) for query variables, the options of custom ones
    default: str | None
    regex: str = ""

    def label_values(self) -> tuple[str, str]:
        """(selector, label) of a ``label_values(selector, label)`` query variable."""
        match = _LABEL_VALUES.match(self.query)
        assert match, f"variable {self.name}: not a label_values(selector, label) query: {self.query!r}"
        return match.group("selector"), match.group("label")

    def query_result(self) -> str | None:
        """The PromQL of a ``query_result(expr)`` query variable, else None."""
        match = _QUERY_RESULT.match(self.query)
        return match.group("expr") if match else None

    def pick(self, texts: list[str]) -> list[str]:
        """Grafana's variable regex (``/.../``) over the query's texts: the first group of each match."""
        if not self.regex:
            return texts
        pattern = re.compile(self.regex.strip("/"))
        found = []
        for text in texts:
            match = pattern.search(text)
            if match:
                found.append(match.group(1) if match.groups() else match.group(0))
        return found


def query_result_text(sample: dict[str, Any]) -> str:
    """Grafana's text of one ``query_result`` sample: ``name{a="b"} value timestamp_ms``."""
    labels = dict(sample["metric"])
    name = labels.pop("__name__", "")
    body = ",".join(f'{key}="{value}"' for key, value in labels.items())
    time_s, value = sample["value"]
    return f"{name}{{{body}}} {value} {int(float(time_s) * 1000)}"

def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data, including those nested in collapsed rows, in board order."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            out += panel.get("panels", [])
        else:
            out.append(panel)
    return out


def targets(panel: dict[str, Any]) -> list[Target]:
    return [
        Target(panel["title"], t["refId"], t["expr"], bool(t.get("instant")) and not t.get("range"))
        for t in panel.get("targets", [])
    ]


def variables(dashboard: dict[str, Any]) -> list[Variable]:
    out = []
    for v in dashboard["templating"]["list"]:
        query = v.get("query", "")
        if isinstance(query, dict):
            query = query.get("query", "")
        current = (v.get("current") or {}).get("value")
        out.append(
            Variable(
                name=v["name"],
                type=v["type"],
                multi=bool(v.get("multi")),
                include_all=bool(v.get("includeAll")),
                query=v.get("definition") or query if v["type"] == "query" else query,
                default=current if isinstance(current, str) else None,
                regex=v.get("regex", ""),
            )
        )
    return out


def variables_used(expr: str) -> set[str]:
    return {a or b for a, b in _VARIABLE.findall(expr)}


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace ``$name`` and ``${name}`` as Grafana does; an unknown variable is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name.isdigit():  # label_replace's "$1" is no variable
            return match.group(0)
        if name not in values:
            raise KeyError(f"no value for variable ${name}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def prometheus_multi_value(values: list[str]) -> str:
    """Grafana's rendering of several values of a multi-value variable for Prometheus: ``(a|b|c)``."""
    for value in values:
        assert re.fullmatch(r"[\w.:-]+", value), f"value {value!r} would need regex escaping"
    return values[0] if len(values) == 1 else "(" + "|".join(v.replace(".", "\\\\.") for v in values) + ")"


def metric_names(expr: str) -> set[str]:
    """The salespulse series names an expression selects (``x_bucket`` etc. as written)."""
    return set(_METRIC.findall(expr))


def family_of(series_name: str, histograms: set[str]) -> str:
    """The metric family of a series name: ``a_bucket`` -> ``a`` when ``a`` is a histogram."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if series_name.endswith(suffix) and series_name.removesuffix(suffix) in histograms:
            return series_name.removesuffix(suffix)
    return series_name
