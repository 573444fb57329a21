"""Turns an Autobahn|Testsuite report into the Markdown summary that ``compliance/run``
prints and writes to ``compliance/results/summary.md``.

Usage: ``python compliance/summarize.py REPORT_DIR --agent NAME [--expect N] [--title T]``.
Exit status: 0 if no case failed, 1 if one did, 2 if the report is missing or has fewer
cases than ``--expect`` (a run cut short).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
"""Autobahn's verdicts, in the order the summary lists them."""

PASSING = frozenset(("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"))
"""Verdicts that do not fail a run (any other, such as Autobahn's NO_CLOSE, does)."""


def case_key(case_id: str) -> tuple[int, ...]:
    """``"6.4.10"`` sorts after ``"6.4.9"``."""
    return tuple(int(part) for part in case_id.split("."))


def load(report_dir: Path, agent: str) -> dict[str, dict[str, Any]]:
    """Each case's full result (``index.json`` points at one JSON file per case)."""
    index = json.loads((report_dir / "index.json").read_text())
    cases: dict[str, dict[str, Any]] = {}
    for case_id, entry in index.get(agent, {}).items():
        detail_file = report_dir / entry["reportfile"]
        detail = json.loads(detail_file.read_text()) if detail_file.exists() else {}
        cases[case_id] = {**entry, **detail}
    return cases


def cell(value: Any) -> str:
    """A value as a Markdown table cell."""
    if value is None or value == []:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def verdict(case: dict[str, Any]) -> str | None:
    """Autobahn's own words on a failed case (the closing handshake's, if that failed)."""
    if case["behavior"] in PASSING:
        return None
    if case.get("behaviorClose") not in ("OK", "INFORMATIONAL"):
        return case.get("resultClose")
    return case.get("result")


def render(cases: dict[str, dict[str, Any]], title: str) -> str:
    """The summary: counts per behavior, then one row per case that is not OK."""
    counts = Counter(case["behavior"] for case in cases.values())
    lines = [f"# {title}", "", f"{len(cases)} cases.", "", "| Behavior | Cases |", "| --- | ---: |"]
    others = sorted(set(counts) - set(BEHAVIORS))
    lines += [f"| {behavior} | {counts[behavior]} |" for behavior in (*BEHAVIORS, *others)]
    not_ok = sorted((c for c in cases if cases[c]["behavior"] != "OK"), key=case_key)
    lines += ["", "Cases that are not OK:", ""]
    if not not_ok:
        lines.append("none")
    else:
        lines += [
            "| Case | Behavior | Close behavior | Server's close | Autobahn's close "
            "| Expected close | Server's reason | Why it failed |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for case_id in not_ok:
            case = cases[case_id]
            expected = case.get("expectedClose", {}).get("closeCode")
            row = (
                case_id,
                case["behavior"],
                case.get("behaviorClose"),
                case.get("remoteCloseCode"),
                case.get("localCloseCode"),
                expected,
                case.get("remoteCloseReason"),
                verdict(case),
            )
            lines.append("| " + " | ".join(cell(value) for value in row) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Print the summary; the exit status says whether the run passed."""
    parser = argparse.ArgumentParser(description="Summarize an Autobahn|Testsuite report.")
    parser.add_argument("report_dir", type=Path)
    parser.add_argument("--agent", required=True, help="the server's name in the spec")
    parser.add_argument("--expect", type=int, help="cases the run was asked to do")
    parser.add_argument("--title", default="Autobahn|Testsuite results")
    args = parser.parse_args()
    try:
        cases = load(args.report_dir, args.agent)
    except FileNotFoundError as exc:
        print(f"no report: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(cases, args.title))
    if args.expect is not None and len(cases) < args.expect:
        print(
            f"\nIncomplete: {len(cases)} of {args.expect} cases reported "
            "(see compliance/results/wstest.log and server.log)."
        )
        return 2
    return 0 if all(case["behavior"] in PASSING for case in cases.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
