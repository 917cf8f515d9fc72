"""The controller: `conveyor watch`, the loop that reconciles what runs with what should.

- ``loop``: :class:`Controller` (one turn: releases, monitoring, retraining, new releases) and
  :func:`run_controller` (turns under the lease).
- ``retraining``: the triggers and guardrails, and the running job.
- ``job``: a retraining as a child process that dies with the controller.
- ``lease``: one controller per project.
- ``metrics``: the monitoring figures at ``/metrics``.
"""

from __future__ import annotations

from conveyor.controller.lease import ControllerBusy, Lease
from conveyor.controller.loop import Controller, run_controller
from conveyor.controller.metrics import serve_metrics

__all__ = ["Controller", "ControllerBusy", "Lease", "run_controller", "serve_metrics"]
