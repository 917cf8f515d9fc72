"""Gate verdicts as JUnit XML, the one test-report format every CI server reads.

Jenkins, GitLab, GitHub (through test-report actions) and Azure show a JUnit file as a list of
test cases with failures, so each gate becomes one test case and a failing gate shows where people
already look. Only the elements and attributes those readers use are written: ``testsuites`` >
``testsuite`` (tests, failures, errors, skipped, time) > ``testcase`` (classname, name, time) >
``failure`` / ``error`` / ``skipped`` (message, type), plus ``system-out`` for a passing gate.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from conveyor.evaluate.values import jsonable

# Characters XML 1.0 forbids; ElementTree writes them as they are, which no parser accepts.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(value: Any) -> str:
    return _INVALID_XML.sub("\ufffd", str(value))


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return max(float(value), 0.0)


def _evidence_text(evidence: Any) -> str:
    if not evidence:
        return ""
    return json.dumps(jsonable(evidence), indent=2, sort_keys=True, default=str)


def _timestamp(created_at: Any) -> str | None:
    """ISO 8601 in UTC without an offset, the form the JUnit schema's ``timestamp`` allows."""
    try:
        moment = datetime.fromisoformat(str(created_at))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds")


def junit_xml(report: Mapping[str, Any], *, suite: str = "conveyor.gates") -> str:
    """The report's gates as a JUnit XML document: one test case per gate.

    ``fail`` and ``inconclusive`` become ``<failure>`` (an inconclusive gate also stops the
    candidate), ``error`` becomes ``<error>``, ``skipped`` becomes ``<skipped>``; a failure's
    text is the gate's evidence as JSON. Any other verdict counts as a failure, so CI never
    shows green for a verdict it does not know.

    Args:
        report: the candidate report dict; reads ``model``, ``gates``, ``created_at`` and, as
            suite properties, ``project``, ``version``, ``status`` and ``run_id``.
        suite: the test suite's name; test cases get the class name ``<suite>.<model>``.
    """
    gates = report.get("gates") or []
    classname = _clean(f"{suite}.{report.get('model') or 'model'}")
    counts = {"tests": len(gates), "failures": 0, "errors": 0, "skipped": 0}
    total = 0.0
    cases = []
    for gate in gates:
        verdict = str(gate.get("verdict"))
        seconds = _seconds(gate.get("duration_s"))
        total += seconds
        case = ET.Element(
            "testcase",
            classname=classname,
            name=_clean(gate.get("name", "")),
            time=f"{seconds:.3f}",
        )
        summary = _clean(gate.get("summary") or verdict)
        evidence = _clean(_evidence_text(gate.get("evidence")))
        if verdict == "pass":
            out = ET.SubElement(case, "system-out")
            out.text = summary + (f"\n{evidence}" if evidence else "")
        elif verdict == "skipped":
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=summary)
        else:
            tag = "error" if verdict == "error" else "failure"
            counts["errors" if tag == "error" else "failures"] += 1
            ET.SubElement(case, tag, message=summary, type=_clean(verdict)).text = evidence
        cases.append(case)

    root = ET.Element("testsuites", name=_clean(suite), time=f"{total:.3f}")
    for key, value in counts.items():
        root.set(key, str(value))
    node = ET.SubElement(root, "testsuite", name=_clean(suite))
    for key, value in counts.items():
        node.set(key, str(value))
    node.set("time", f"{total:.3f}")
    stamp = _timestamp(report.get("created_at"))
    if stamp:
        node.set("timestamp", stamp)
    props = ET.SubElement(node, "properties")
    for key in ("project", "model", "version", "status", "run_id"):
        if report.get(key) is not None:
            ET.SubElement(props, "property", name=key, value=_clean(report[key]))
    node.extend(cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
