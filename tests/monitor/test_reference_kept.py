"""A version's answers on its stored holdout are kept on disk: the next process (a new
`conveyor monitor`) builds the same reference without loading the model, so without importing
its framework; a kept file that cannot be read is scored again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_BUILD = """
import json, sys
from conveyor.actions.models import open_registry
from conveyor.config import load_config
from conveyor.monitor.reference import reference_for
config = load_config(sys.argv[1])
with open_registry(config) as registry:
    reference = reference_for(registry, registry.version("churn", 1))
print(json.dumps({
    "predictions": reference.predictions.tolist(),
    "target": None if reference.target is None else reference.target.tolist(),
    "columns": list(reference.features.columns),
    "rows": reference.rows,
    "source": reference.source,
    "sklearn": "sklearn" in sys.modules,
}))
"""


def _build(root: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _BUILD, str(root / "conveyor.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The churn project of tests/churn_project.py with version 1 registered by `conveyor ci`."""
    from conveyor.actions.ci import run_ci
    from tests.churn_project import STEPS, rows
    from tests.conftest import ProjectFactory

    project = ProjectFactory(tmp_path_factory.mktemp("kept") / "proj")
    project.root.mkdir()
    project.write("shop.py", STEPS)
    project.write(
        "conveyor.yaml",
        """
        project: shop
        data:
          rows: data/rows.csv
        pipeline:
          prepare: {run: shop:prepare, inputs: [data.rows]}
          train:
            run: shop:train
            inputs: [prepare.train]
            params: {features: [tenure, spend, region], C: 1.0}
          evaluate: {run: conveyor.evaluate:classification, inputs: [train, prepare.test]}
        model: {name: churn, from: train, holdout: prepare.test, target: churned}
        gates: [roc_auc >= 0.55]
        """,
    )
    (project.root / "data").mkdir()
    rows().to_csv(project.root / "data" / "rows.csv", index=False)
    assert run_ci(project.config(), jobs=1).version == 1
    return project.root


def test_the_next_process_reads_the_answers_instead_of_loading_the_model(
    registered: Path,
) -> None:
    first = _build(registered)
    kept = list((registered / ".conveyor" / "artifacts" / "references" / "v1").glob("*.npz"))
    assert len(kept) == 1
    second = _build(registered)
    assert first["sklearn"] and not second["sklearn"]
    assert {**second, "sklearn": None} == {**first, "sklearn": None}
    assert second["rows"] == 1200 and second["target"] is not None


def test_an_unreadable_kept_file_is_scored_again(registered: Path) -> None:
    first = _build(registered)
    (kept,) = (registered / ".conveyor" / "artifacts" / "references" / "v1").glob("*.npz")
    kept.write_bytes(b"not an npz file")
    again = _build(registered)
    assert again["sklearn"]
    assert again["predictions"] == first["predictions"]
    assert _build(registered)["sklearn"] is False  # kept afresh
