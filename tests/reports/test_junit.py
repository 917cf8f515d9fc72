"""JUnit XML of gate verdicts: parsed back, counted, shaped as Jenkins and GitLab read it."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from conveyor.reports.junit import junit_xml
from tests.reports.test_markdown import (
    registered_report,
    regression_report,
    rejected_report,
)

# What the JUnit readers of Jenkins (junit plugin) and GitLab (test reports) look at, per element:
# allowed attributes and allowed children. Anything else would be ignored or rejected.
_SHAPE = {
    "testsuites": ({"name", "tests", "failures", "errors", "skipped", "time"}, {"testsuite"}),
    "testsuite": (
        {"name", "tests", "failures", "errors", "skipped", "time", "timestamp"},
        {"properties", "testcase"},
    ),
    "properties": (set(), {"property"}),
    "property": ({"name", "value"}, set()),
    "testcase": ({"classname", "name", "time"}, {"failure", "error", "skipped", "system-out"}),
    "failure": ({"message", "type"}, set()),
    "error": ({"message", "type"}, set()),
    "skipped": ({"message"}, set()),
    "system-out": (set(), set()),
}


def assert_junit_shape(root: ET.Element) -> None:
    """Checks every element against _SHAPE, and counts and times against the test cases."""
    for node in root.iter():
        attrs, children = _SHAPE[node.tag]
        assert set(node.attrib) <= attrs, (node.tag, node.attrib)
        assert {c.tag for c in node} <= children, (node.tag, [c.tag for c in node])
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    cases = suite.findall("testcase")
    for case in cases:
        assert case.get("classname") and case.get("name") is not None
        float(case.get("time", ""))
        outcomes = [c.tag for c in case if c.tag != "system-out"]
        assert len(outcomes) <= 1
        # the schema puts the outcome before system-out
        tags = [c.tag for c in case]
        assert tags == sorted(tags, key=lambda t: t == "system-out")
    for node in (root, suite):
        assert int(node.get("tests", "")) == len(cases)
        for key, tag in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
            assert int(node.get(key, "")) == sum(1 for c in cases if c.find(tag) is not None)
        total = sum(float(c.get("time", "")) for c in cases)
        assert abs(float(node.get("time", "")) - total) < 1e-6


def test_rejected_candidate_counts_and_outcomes() -> None:
    root = ET.fromstring(junit_xml(rejected_report()))
    assert_junit_shape(root)
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("name") == "conveyor.gates"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("6", "3", "0")
    assert suite.get("skipped") == "0"
    assert suite.get("time") == "0.072"
    assert suite.get("timestamp") == "2026-11-23T10:00:00"
    cases = suite.findall("testcase")
    assert {c.get("classname") for c in cases} == {"conveyor.gates.loans-default"}
    compare = cases[1]
    assert compare.get("name") == "roc_auc >= production.roc_auc - 0.005"
    assert compare.get("time") == "0.012"
    failure = compare.find("failure")
    assert failure is not None
    assert failure.get("type") == "fail"
    assert failure.get("message") == "roc_auc is worse than production v2 by more than 0.005."
    evidence = json.loads(failure.text or "")
    assert evidence["diff"] == -0.018 and evidence["method"] == "delong"
    # inconclusive stops a candidate, so CI must show it as a failure too
    size = cases[5].find("failure")
    assert size is not None and size.get("type") == "inconclusive"
    assert json.loads(size.text or "") == {"size": None}
    # a passing gate carries its summary and evidence as output, and no outcome element
    passing = cases[0]
    assert [c.tag for c in passing] == ["system-out"]
    assert (passing.findtext("system-out") or "").startswith("roc_auc 0.7910 >= 0.75.\n{")


def test_properties_name_the_candidate() -> None:
    root = ET.fromstring(junit_xml(registered_report()))
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props == {
        "project": "loans",
        "model": "loans-default",
        "version": "3",
        "status": "registered",
        "run_id": "r-20261123-100000-ab12",
    }
    assert "version" not in {
        p.get("name") for p in ET.fromstring(junit_xml(rejected_report())).iter("property")
    }


def test_error_and_skipped_verdicts() -> None:
    report = registered_report()
    report["gates"][2]["verdict"] = "error"
    report["gates"][2]["summary"] = "Column 'homeownership' is not in the holdout."
    report["gates"][3]["verdict"] = "skipped"
    report["gates"][3]["summary"] = "No latency budget for a batch model."
    report["gates"][3]["duration_s"] = None
    root = ET.fromstring(junit_xml(report, suite="ci.loans"))
    assert_junit_shape(root)
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("0", "1", "1")
    cases = suite.findall("testcase")
    assert cases[0].get("classname") == "ci.loans.loans-default"
    error = cases[2].find("error")
    assert error is not None
    assert error.get("message") == "Column 'homeownership' is not in the holdout."
    assert json.loads(error.text or "")["per_group"]["RENT"] == 0.45
    skipped = cases[3].find("skipped")
    assert skipped is not None and skipped.get("message") == "No latency budget for a batch model."
    assert cases[3].get("time") == "0.000"


def test_unknown_verdict_is_a_failure() -> None:
    report = registered_report()
    report["gates"][0]["verdict"] = "warn"
    case = ET.fromstring(junit_xml(report)).find("testsuite/testcase")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None and failure.get("type") == "warn"


def test_special_characters_survive() -> None:
    report = rejected_report()
    name = "recall_gap < 0.1 & \"quoted\" 'single' <script>alert(1)</script>\nline2"
    report["gates"][1]["name"] = name
    report["gates"][1]["summary"] = "bad\x00byte and \x1b[31mcolour\x1b[0m"
    report["gates"][1]["evidence"] = {"note": "ünïcödé ✓", "ratio": float("nan")}
    text = junit_xml(report)
    root = ET.fromstring(text)
    assert_junit_shape(root)
    case = root.findall("testsuite/testcase")[1]
    assert case.get("name") == name
    failure = case.find("failure")
    assert failure is not None
    # characters XML 1.0 cannot hold become U+FFFD instead of making the file unreadable
    assert failure.get("message") == "bad\ufffdbyte and \ufffd[31mcolour\ufffd[0m"
    assert json.loads(failure.text or "") == {"note": "ünïcödé ✓", "ratio": None}
    assert "<script>" not in text


def test_no_gates_is_an_empty_suite() -> None:
    root = ET.fromstring(junit_xml(regression_report()))
    assert_junit_shape(root)
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("time")) == ("0", "0", "0.000")
    assert suite.findall("testcase") == []


def test_declaration_and_unparseable_timestamp() -> None:
    report = regression_report()
    report["created_at"] = "yesterday"
    text = junit_xml(report)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites')
    suite = ET.fromstring(text).find("testsuite")
    assert suite is not None and "timestamp" not in suite.attrib
