"""Monitoring exports: Prometheus alerting rules and a Grafana dashboard over Conveyor's series.

The rules file is checked by Prometheus' own `promtool check rules` and unit-tested with
`promtool test rules`, which feeds it series and asserts which alerts fire, with which labels and
rendered summaries. Without promtool those checks are skipped (with the reason) and the file's
structure is checked instead. Every metric name in every expression (rules and dashboard) must be
one the monitor contract or the gateway exports; the gateway's are read from a real
``GatewayMetrics`` registry rather than from a list in this file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.exceptions import ExportError
from conveyor.export.monitoring_files import (
    DEFAULT_PATHS,
    METRICS,
    render_grafana,
    render_prometheus_rules,
    write_monitoring,
)
from conveyor.gateway.metrics import GatewayMetrics

PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool is not on PATH (install Prometheus, e.g. `apt-get install prometheus`)"

CONFIG = """
project: loans
data:
  rows: data/rows.csv
pipeline:
  prepare: {run: loans:prepare, inputs: [data.rows]}
  train: {run: loans:train, inputs: [prepare.train]}
model: {name: churn, from: train, holdout: prepare.test, target: defaulted}
monitor:
  environment: production
  min_rows: 200
  drift: {psi: 0.25, share: 0.3}
  alerts:
    - {name: data drift, when: {drift_share: 0.2}, webhook: "https://hooks.example/ml"}
    - {name: income drift, when: {column: annual_income}}
    - {name: live accuracy, when: {metric: accuracy, below: 0.7}, severity: critical}
    - {name: errors, when: {error_rate: 0.05}}
    - {name: slow, when: {p99_ms: 100}, severity: info}
"""

# The monitor's gauges, as the shared contract names them.
MONITOR_METRICS = {
    "conveyor_monitor_rows",
    "conveyor_drift_share",
    "conveyor_feature_drift",
    "conveyor_feature_psi",
    "conveyor_prediction_psi",
    "conveyor_live_metric",
    "conveyor_labelled_share",
}
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


@pytest.fixture
def config(project):  # -> ProjectConfig
    project.write("conveyor.yaml", CONFIG)
    return project.config()


def gateway_series() -> set[str]:
    """The sample names a real gateway exposes once it has answered a request."""
    metrics = GatewayMetrics()
    metrics.observe_request("churn", 1, "production", 200, 0.01, 1)
    metrics.batch_observer("churn", 1)(4, 0.001)
    text = metrics.exposition().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def metric_names(expr: str) -> set[str]:
    """The series an expression selects: identifiers followed by a selector or a range."""
    bare = _STRING.sub('""', expr)
    names = set()
    for match in _IDENTIFIER.finditer(bare):
        rest = bare[match.end() :].lstrip()
        if rest[:1] in ("{", "[") and not bare[: match.start()].rstrip().endswith(("by", "on")):
            names.add(match.group())
    # Any conveyor_* name counts, wherever it stands.
    names |= {n for n in _IDENTIFIER.findall(bare) if n.startswith("conveyor_")}
    return names


def allowed_metrics() -> set[str]:
    served = gateway_series()
    gateway = {"conveyor_requests_total", "conveyor_request_duration_seconds_bucket"}
    assert gateway <= served  # the contract's gateway series exist in the real gateway
    assert "conveyor_batch_rows_bucket" in served  # the batch-size panel's series
    return MONITOR_METRICS | gateway | {"conveyor_batch_rows_bucket"}


def test_metric_list_matches_the_contract_and_gateway() -> None:
    assert set(METRICS) == allowed_metrics()


def test_monitor_exports_the_gauges_the_files_read() -> None:
    """The monitor's own exposition (``prometheus_text``) has every gauge the files read."""
    from conveyor.monitor import prometheus_text

    report = {
        "model": "churn",
        "environment": "production",
        "rows": 500,
        "drift": {
            "share_drifted": 0.5,
            "drifted": ["annual_income"],
            "columns": {
                "annual_income": {"drifted": True, "stats": {"psi": {"statistic": 0.4}}},
                "age": {"drifted": False, "stats": {"psi": {"statistic": 0.01}}},
            },
        },
        "prediction_drift": {"psi": 0.1, "drifted": False, "p_value": 0.3},
        "quality": {"labelled": 10, "labelled_share": 0.02, "metrics": {"accuracy": 0.8}},
    }
    text = prometheus_text(report)
    exported = {line.split("{")[0] for line in text.splitlines() if not line.startswith("#")}
    assert exported == MONITOR_METRICS
    assert 'conveyor_feature_drift{environment="production",feature="annual_income",' in text


# -- Prometheus rules -------------------------------------------------------------------------


def test_rules_file_has_one_rule_per_alert(config) -> None:
    text = render_prometheus_rules(config)
    assert text.startswith("# Generated by `conveyor export prometheus-rules`")
    document = yaml.safe_load(text)
    assert set(document) == {"groups"}
    (group,) = document["groups"]
    assert set(group) == {"name", "rules"}
    assert group["name"] == "conveyor-loans-churn-production"
    rules = {rule["alert"]: rule for rule in group["rules"]}
    assert list(rules) == ["data drift", "income drift", "live accuracy", "errors", "slow"]
    allowed = allowed_metrics()
    for rule in rules.values():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
        assert set(rule["annotations"]) == {"summary", "description"}
        assert rule["labels"]["model"] == "churn"
        assert rule["labels"]["environment"] == "production"
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        names = metric_names(rule["expr"])
        assert names and names <= allowed, rule["expr"]
        assert 'model="churn"' in rule["expr"] and 'environment="production"' in rule["expr"]
    assert rules["live accuracy"]["labels"]["severity"] == "critical"
    assert rules["slow"]["labels"]["severity"] == "info"
    assert rules["data drift"]["labels"]["severity"] == "warning"
    assert rules["data drift"]["expr"].startswith(
        'conveyor_drift_share{model="churn",environment="production"} >= 0.2 '
    )
    assert 'feature="annual_income"} == 1' in rules["income drift"]["expr"]
    assert 'metric="accuracy"} < 0.7' in rules["live accuracy"]["expr"]
    assert 'status=~"5.."' in rules["errors"]["expr"]
    assert rules["errors"]["expr"].endswith("[5m])) > 0.05")
    assert rules["slow"]["expr"].startswith(
        "histogram_quantile(0.99, sum by (le) (rate(conveyor_request_duration_seconds_bucket{"
    )
    assert rules["slow"]["expr"].endswith("[5m]))) * 1000 > 100")
    # The monitor's rules hold only on enough rows, like Conveyor's own alerts.
    for name in ("data drift", "income drift", "live accuracy"):
        assert "conveyor_monitor_rows" in rules[name]["expr"]
        assert rules[name]["expr"].endswith(">= 200")


@pytest.mark.slow
@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_checks_the_rules_file(config, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(render_prometheus_rules(config))
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    selector = ",".join(
        f'{k}="{v}"' for k, v in {"model": "churn", "environment": "production", **labels}.items()
    )
    return {"series": f"{name}{{{selector}}}", "values": values}


def _alert(rules: dict[str, Any], name: str, summary: str, **labels: str) -> dict[str, Any]:
    base = {"model": "churn", "environment": "production"}
    return {
        "exp_labels": {**base, **labels, "severity": rules[name]["labels"]["severity"]},
        "exp_annotations": {
            "summary": summary,
            "description": rules[name]["annotations"]["description"],
        },
    }


@pytest.mark.slow
@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_unit_tests_fire_the_rules(config, tmp_path: Path) -> None:
    text = render_prometheus_rules(config)
    rules = {rule["alert"]: rule for rule in yaml.safe_load(text)["groups"][0]["rules"]}
    (tmp_path / "rules.yaml").write_text(text)
    latency = "conveyor_request_duration_seconds_bucket"
    busy = [
        _series("conveyor_monitor_rows", "500x20"),
        _series("conveyor_drift_share", "0.1 0.1 0.3x18"),
        _series("conveyor_feature_drift", "0 1x19", feature="annual_income"),
        _series("conveyor_feature_drift", "1x20", feature="age"),
        _series("conveyor_live_metric", "0.9 0.9 0.65x18", metric="accuracy"),
        _series("conveyor_live_metric", "0.1x20", metric="recall"),
        # 60 answers a minute, 6 of them 5xx from minute 0: 9% > 5%.
        _series("conveyor_requests_total", "0+54x20", version="1", status="200"),
        _series("conveyor_requests_total", "0+6x20", version="1", status="503"),
        _series("conveyor_requests_total", "0+1x20", version="1", status="404"),
        # Half the requests under 50 ms, the rest under 250 ms: p99 = 246 ms.
        _series(latency, "0+30x20", version="1", le="0.05"),
        _series(latency, "0+60x20", version="1", le="0.25"),
        _series(latency, "0+60x20", version="1", le="+Inf"),
    ]
    quiet = [
        _series("conveyor_monitor_rows", "50x20"),  # below min_rows: the monitor's rules hold off
        _series("conveyor_drift_share", "0.9x20"),
        _series("conveyor_feature_drift", "1x20", feature="annual_income"),
        _series("conveyor_live_metric", "0.1x20", metric="accuracy"),
        _series("conveyor_requests_total", "0+60x20", version="1", status="200"),
        _series(latency, "0+60x20", version="1", le="0.05"),
        _series(latency, "0+60x20", version="1", le="+Inf"),
    ]
    names = list(rules)
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": busy,
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "data drift", "exp_alerts": []},
                    {
                        "eval_time": "3m",
                        "alertname": "data drift",
                        "exp_alerts": [
                            _alert(
                                rules,
                                "data drift",
                                "30% of the features of 'churn' in 'production' drift (bound 20%).",
                            )
                        ],
                    },
                    {
                        "eval_time": "2m",
                        "alertname": "income drift",
                        "exp_alerts": [
                            _alert(
                                rules,
                                "income drift",
                                "The feature 'annual_income' of 'churn' in 'production' drifts "
                                "from the reference.",
                                feature="annual_income",
                            )
                        ],
                    },
                    {
                        "eval_time": "3m",
                        "alertname": "live accuracy",
                        "exp_alerts": [
                            _alert(
                                rules,
                                "live accuracy",
                                "The live accuracy of 'churn' in 'production' is 0.65 (below 0.7).",
                                metric="accuracy",
                            )
                        ],
                    },
                    # Pending for 5 minutes before it fires.
                    {"eval_time": "4m", "alertname": "errors", "exp_alerts": []},
                    {
                        "eval_time": "12m",
                        "alertname": "errors",
                        "exp_alerts": [
                            _alert(
                                rules,
                                "errors",
                                "9.836% of the requests to 'churn' in 'production' fail with "
                                "a 5xx (bound 5%).",
                            )
                        ],
                    },
                    {
                        "eval_time": "12m",
                        "alertname": "slow",
                        "exp_alerts": [
                            _alert(
                                rules,
                                "slow",
                                "The p99 latency of 'churn' in 'production' is 246 ms "
                                "(bound 100 ms).",
                            )
                        ],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": quiet,
                "alert_rule_test": [
                    {"eval_time": "12m", "alertname": name, "exp_alerts": []} for name in names
                ],
            },
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", "tests.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_quote_label_values_and_templates(project, tmp_path: Path) -> None:
    project.write(
        "conveyor.yaml",
        """
        project: loans
        monitor:
          environment: prod-eu
          alerts:
            - {name: odd column, when: {column: 'we"ird {{x}}'}}
        """,
    )
    text = render_prometheus_rules(project.config(), model="churn")
    (rule,) = yaml.safe_load(text)["groups"][0]["rules"]
    assert 'feature="we\\"ird {{x}}"' in rule["expr"]
    # Prometheus would run "{{x}}" as a template; the file makes it print the braces instead.
    assert """'we"ird {{ "{{" }}x}}'""" in rule["annotations"]["summary"]
    if PROMTOOL is not None:
        path = tmp_path / "rules.yaml"
        path.write_text(text)
        result = subprocess.run(
            [str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_rules_need_alerts_and_a_model_name(project) -> None:
    project.write("conveyor.yaml", "project: loans\nmonitor: {environment: production}\n")
    with pytest.raises(ExportError, match="no monitor.alerts"):
        render_prometheus_rules(project.config(), model="churn")
    project.write(
        "conveyor.yaml",
        "project: loans\nmonitor: {alerts: [{name: errors, when: {error_rate: 0.1}}]}\n",
    )
    with pytest.raises(ExportError, match="no model: section.*option 'model'"):
        render_prometheus_rules(project.config())
    rules = yaml.safe_load(render_prometheus_rules(project.config(), model="fraud"))
    assert 'model="fraud"' in rules["groups"][0]["rules"][0]["expr"]


# -- Grafana ----------------------------------------------------------------------------------


def test_grafana_dashboard_reads_only_known_series(config) -> None:
    dashboard = json.loads(render_grafana(config))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["environment"]["current"]["value"] == "production"
    assert dashboard["uid"].startswith("conveyor-") and len(dashboard["uid"]) <= 40
    allowed = allowed_metrics()
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert titles == [
        "Requests/s by version",
        "Error rate (5xx)",
        "Latency p50 / p99 by version",
        "Rows per predict call (micro-batches)",
        "Share of drifting features",
        "Drifting features (1 = drifts)",
        "PSI per feature",
        "Prediction PSI",
        "Live metrics (from labels)",
        "Labelled share of served rows",
        "Served rows in the monitor's window",
    ]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    used = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            names = metric_names(target["expr"])
            assert names and names <= allowed, target["expr"]
            assert 'model="churn"' in target["expr"]
            used |= names
    assert used == allowed  # every series has a panel
    psi = next(p for p in dashboard["panels"] if p["title"] == "PSI per feature")
    assert psi["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == 0.25
    assert psi["targets"][0]["legendFormat"] == "{{feature}}"


@pytest.mark.slow
@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_grafana_queries_parse_as_promql(config, tmp_path: Path) -> None:
    """promtool parses every panel's query (as a recording rule), Grafana's variables filled."""
    dashboard = json.loads(render_grafana(config))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    variable = dashboard["templating"]["list"][1]["definition"]
    selector = re.fullmatch(r"label_values\((.+), environment\)", variable)
    assert selector is not None, variable
    exprs.append(selector.group(1))
    rules = [
        {
            "record": f"conveyor:panel_{i}",
            "expr": e.replace("$__rate_interval", "1m").replace("$environment", "production"),
        }
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_without_monitor_section(project) -> None:
    project.write("conveyor.yaml", "project: loans\n")
    dashboard = json.loads(render_grafana(project.config(), model="fraud"))
    assert dashboard["templating"]["list"][1]["current"]["value"] == "production"
    assert all('model="fraud"' in t["expr"] for p in dashboard["panels"] for t in p["targets"])


# -- writing ----------------------------------------------------------------------------------


def test_write_monitoring_defaults_idempotence_and_force(config) -> None:
    root = Path(config.root)
    (rules,) = write_monitoring(config, "prometheus-rules")
    assert (
        rules == root / DEFAULT_PATHS["prometheus-rules"] == root / "deploy/prometheus-rules.yaml"
    )
    assert rules.read_text() == render_prometheus_rules(config)
    (dashboard,) = write_monitoring(config, "grafana")
    assert dashboard == root / "deploy/grafana-dashboard.json"
    json.loads(dashboard.read_text())
    assert write_monitoring(config, "prometheus-rules") == []  # same text: left alone
    rules.write_text("# my own edits\n")
    with pytest.raises(ExportError, match=r"prometheus-rules\.yaml' already exists.*--force"):
        write_monitoring(config, "prometheus-rules")
    assert rules.read_text() == "# my own edits\n"
    assert write_monitoring(config, "prometheus-rules", force=True) == [rules]
    assert rules.read_text() == render_prometheus_rules(config)
    leftovers = [p.name for p in rules.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_write_monitoring_output_and_errors(config) -> None:
    root = Path(config.root)
    (path,) = write_monitoring(config, "grafana", Path("ops/dash.json"), model="fraud")
    assert path == root / "ops/dash.json"
    exprs = [t["expr"] for p in json.loads(path.read_text())["panels"] for t in p["targets"]]
    assert all('model="fraud"' in e and "churn" not in e for e in exprs)  # the option wins
    with pytest.raises(ExportError, match="Unknown monitoring kind 'nagios'"):
        write_monitoring(config, "nagios")
    (root / "ops" / "folder").mkdir()
    with pytest.raises(ExportError, match="is a folder"):
        write_monitoring(config, "grafana", root / "ops" / "folder")
    (root / "blocker").write_text("x")
    with pytest.raises(ExportError, match=r"/blocker' is a file, not a folder"):
        write_monitoring(config, "grafana", Path("blocker/dash.json"))
