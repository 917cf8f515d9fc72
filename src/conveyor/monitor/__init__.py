"""Monitoring: windows of the request log against the served version's reference.

``monitor_report`` gives one environment's drift per feature, prediction drift, live quality
from feedback labels, error rate and latency, as the dict the alert rules read
(``MonitorReport``);
``prometheus_text`` and ``write_html`` render it.
"""

from __future__ import annotations

from conveyor.monitor.html import render_html, write_html
from conveyor.monitor.reference import Reference, clear_references, reference_for
from conveyor.monitor.report import (
    Monitoring,
    MonitorReport,
    monitor_report,
    observe,
    prometheus_text,
    served_version,
)
from conveyor.monitor.windows import Window, read_window

__all__ = [
    "MonitorReport",
    "Monitoring",
    "Reference",
    "Window",
    "clear_references",
    "monitor_report",
    "observe",
    "prometheus_text",
    "read_window",
    "reference_for",
    "render_html",
    "served_version",
    "write_html",
]
