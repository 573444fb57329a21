"""``deploy/grafana/hubbub.json``, the Grafana dashboard: every metric each panel's PromQL
(and each variable's query) names is exposed by a running server's ``/metrics``, with the
labels the queries group by; every query is filtered by the ``$job`` and ``$instance``
variables."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.roomclient import RoomClient
from tests.servers import ServerProcess

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "hubbub.json"
TIMEOUT = 30
SELECTOR = '{job=~"$job", instance=~"$instance"}'
# Labels Prometheus adds to every series it scrapes (not the server's).
TARGET_LABELS = {"job", "instance"}
# Words of PromQL that are not metric names, where they are not followed by "(".
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan"}  # fmt: skip
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}


def metric_names(expr: str) -> list[str]:
    """The metric names a PromQL expression selects, in order."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (matchers' values)
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = []
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        name = match.group()
        if expr[match.end() :].lstrip().startswith("(") or name.lower() in KEYWORDS:
            continue  # a function, an aggregation, or a keyword
        names.append(name)
    return names


def grouping_labels(expr: str) -> set[str]:
    """The labels a PromQL expression groups by (``by (a, b)``)."""
    return {
        label.strip()
        for group in re.findall(r"\bby\s*\(([^)]*)\)", expr)
        for label in group.split(",")
        if label.strip()
    }


def test_metric_names_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, op) (rate(a_bucket{job=~"$job"}[$__rate_interval])))'
        " / on (op) group_left sum(increase(b_total[5m] offset 1h)) > bool 1e3 or c"
    )
    assert metric_names(expr) == ["a_bucket", "b_total", "c"]
    assert grouping_labels(expr) == {"le", "op"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def expressions(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target."""
    return [
        (f"panel {panel['title']!r}", target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


def variable_queries(board: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, metric selector, label) of every ``label_values(...)`` variable."""
    found = []
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text)
        assert match, f"variable {variable['name']}: {text!r} is not label_values(metric, label)"
        found.append((variable["name"], match.group(1), match.group(2)))
    return found


def test_the_dashboard_is_one_grafana_dashboard() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    assert board["uid"] == "hubbub"
    for panel in panels(board):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
    names = {variable["name"] for variable in board["templating"]["list"]}
    assert names == {"datasource", "job", "instance"}


def test_every_query_is_filtered_by_job_and_instance() -> None:
    for where, expr in expressions(dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert expr.count(SELECTOR) == len(names), f"{where}: {expr!r} needs {SELECTOR} on each"


def scrape(server: ServerProcess) -> dict[str, tuple[str, set[str], int]]:
    """Every series name ``/metrics`` can hold: (family type, label names, samples)."""
    with urllib.request.urlopen(server.http("/metrics"), timeout=TIMEOUT) as response:
        text = response.read().decode()
    series: dict[str, tuple[str, set[str], int]] = {}
    for family in text_string_to_metric_families(text):
        labels = {label for sample in family.samples for label in sample.labels}
        for suffix in SUFFIXES[family.type]:
            name = family.name + suffix
            series[name] = (family.type, labels, len(family.samples))
        for sample in family.samples:
            series.setdefault(sample.name, (family.type, labels, len(family.samples)))
    return series


@pytest.fixture
def busy_server(start_server: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    """A server that has done some of everything the dashboard shows: rooms with
    messages (store, deliveries), connections closed, and a webhook receiver (that
    never answers)."""
    server = start_server(
        "--webhook-urls", "http://127.0.0.1:9/hook", "--webhook-secret", "w" * 32
    )  # fmt: skip

    async def traffic() -> None:
        pat = await RoomClient.open(server.ws(""), "pat")
        await pat.join("lobby")
        await pat.say("lobby", "hello")
        await pat.close()

    asyncio.run(traffic())
    deadline = time.monotonic() + TIMEOUT
    # The close is counted once the server has seen it: look until it is.
    while scrape(server)["hubbub_connections_closed_total"][2] == 0:
        assert time.monotonic() < deadline, "the close was never counted"
        time.sleep(0.05)
    yield server


def test_every_metric_the_dashboard_queries_is_exposed(busy_server: ServerProcess) -> None:
    board = dashboard()
    series = scrape(busy_server)
    missing: list[str] = []
    for where, expr in expressions(board):
        for name in metric_names(expr):
            if name not in series:
                missing.append(f"{where}: {name}")
                continue
            _, labels, samples = series[name]
            if samples:  # a labelled family with no child yet shows no labels
                for label in grouping_labels(expr) - TARGET_LABELS - {"le"} - labels:
                    missing.append(f"{where}: {name} has no label {label!r}")
    for variable, selector, label in variable_queries(board):
        for name in metric_names(selector):
            if name not in series:
                missing.append(f"variable {variable}: {name}")
        assert label in TARGET_LABELS, f"variable {variable}: {label}"
    assert not missing, "\n".join(missing)
    # What the panels ask of the process and the workers is there too.
    for name in ("process_cpu_seconds_total", "process_open_fds", "hubbub_workers"):
        assert name in series
