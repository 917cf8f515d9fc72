"""Where a stage's parameters come from, so one script serves every runner.

Conveyor hands a cmd step its ``params`` as JSON in ``CONVEYOR_PARAMS``; DVC (and the bare run)
read the stage's section of ``params.yaml``.
"""

from __future__ import annotations

import json
import os


def load(stage: str) -> dict:
    """The parameters of ``stage``."""
    if "CONVEYOR_PARAMS" in os.environ:
        return json.loads(os.environ["CONVEYOR_PARAMS"])
    import yaml

    with open("params.yaml") as f:
        return yaml.safe_load(f)[stage]
