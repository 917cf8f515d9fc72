"""`make bench`: Conveyor timed beside DVC 3 and MLflow in one run, on the same machine and data.

    .venv/bin/python benchmarks/run.py            # full: 10 MB and 1 GB, medians of 3 (~5 min)
    .venv/bin/python benchmarks/run.py --quick    # smoke check: 10 MB, 100 MB hashing, 1 repeat
    .venv/bin/python benchmarks/run.py --only pipeline --only startup --keep

Prints a Markdown table (Conveyor's figure, the reference's, the ratio, the goal) and writes it
with the raw JSON to benchmarks/results/ (latest.* for a full run, quick.* or partial.*
otherwise). DVC and MLflow venvs are created on first use from the pinned requirements files.
Generated data and projects live in benchmarks/work/; the 1 GB is deleted at the end unless
--keep.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from suite import data, environments, hashing, pipeline_runs, pipelines, report, startup, tracking
from suite.machine import commit, describe_machine, load_average

SECTIONS = ("startup", "pipeline", "hashing", "tracking")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 MB only, 1 repeat: a smoke check")
    parser.add_argument("--keep", action="store_true", help="keep the 1 GB and the projects")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this section (repeatable)"
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="measure Conveyor alone (no DVC or MLflow)"
    )
    parser.add_argument(
        "--repeats", type=int, help="samples per measure (default 3, quick 1; start-up +2)"
    )
    parser.add_argument("--work", type=Path, default=environments.DEFAULT_WORK)
    return parser.parse_args(argv)


def _tool_version(bin_dir: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    done = subprocess.run(
        [str(bin_dir / "python"), "-c", code], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _save(results: dict, stem: str) -> tuple[Path, Path]:
    environments.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = environments.RESULTS_DIR / f"{stem}.json"
    md_path = environments.RESULTS_DIR / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    md_path.write_text(report.markdown(results))
    return md_path, json_path


def _cleanup(work: Path) -> None:
    """Delete the projects and the 1 GB; keep the 10 MB CSV and HOME (cheap to keep)."""
    keep = {work / "home", work / "data", work / "data" / "small.csv"}
    for child in [*work.iterdir(), *(work / "data").glob("*")]:
        if child not in keep and child.exists():
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def run_pipeline_section(
    results: dict, work: Path, env: dict, dvc: Path | None, names: list[str], repeats: int
) -> None:
    results["pipeline"] = {}
    for name in names:
        log(f"{name}: generating / reusing data")
        source = data.small_csv(work / "data") if name == "small" else data.large_dir(work / "data")
        size, files = data.size_of(source)
        hashing.warm_page_cache([source] if source.is_file() else sorted(source.iterdir()))
        ds = pipelines.dataset(name, source)
        first, conv_root, dvc_repo = pipeline_runs.first_runs(ds, work, env, dvc, repeats, log)
        entry = {"input": {"bytes": size, "files": files}, "first_run": first}
        entry["snapshot_variant"] = pipeline_runs.snapshot_variant(ds, work, env, log)
        reference = (dvc, *dvc_repo) if dvc is not None and dvc_repo is not None else None
        entry |= pipeline_runs.cached_runs(ds, conv_root, env, reference, repeats, log)
        shutil.rmtree(conv_root)
        if dvc_repo is not None:
            shutil.rmtree(dvc_repo[0])
        results["pipeline"][name] = entry


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sections = args.only or list(SECTIONS)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    repeats = args.repeats or (1 if args.quick else 3)
    startup_repeats = repeats + 2
    env = environments.base_env(work)
    results: dict = {
        "meta": {
            "quick": args.quick,
            "sections": sections,
            "started": time.strftime("%Y-%m-%d %H:%M %Z"),
            "machine": describe_machine(),
            "python": platform.python_version(),
            "conveyor_version": metadata.version("conveyor-ml"),
            "commit": commit(),
            "repeats": repeats,
            "startup_repeats": startup_repeats,
            "load_before": load_average(),
        }
    }
    dvc_bin = mlflow_bin = None
    if not args.no_reference:
        dvc_bin = environments.ensure_venv("dvc", log)
        mlflow_bin = environments.ensure_venv("mlflow", log)
        results["meta"]["dvc_version"] = _tool_version(dvc_bin, "dvc")
        results["meta"]["mlflow_version"] = _tool_version(mlflow_bin, "mlflow")
    dvc = dvc_bin / "dvc" if dvc_bin else None
    stem = "quick" if args.quick else ("latest" if sections == list(SECTIONS) else "partial")
    started = time.perf_counter()
    try:
        if "startup" in sections:
            tools = {"conveyor": environments.conveyor_bin() / "conveyor"}
            if dvc_bin and mlflow_bin:
                tools |= {"dvc": dvc_bin / "dvc", "mlflow": mlflow_bin / "mlflow"}
            results["startup"] = startup.help_times(work, env, tools, startup_repeats, log)
        if "pipeline" in sections:
            names = ["small"] if args.quick else ["small", "large"]
            run_pipeline_section(results, work, env, dvc, names, repeats)
        if "hashing" in sections:
            folder = data.large_dir(work / "data", files=10 if args.quick else data.LARGE_FILES)
            if args.quick:  # a 10-file folder of its own, so the full 1 GB folder is untouched
                folder = _subset(folder, work / "data" / "hash-quick", 10)
            results["hashing"] = {
                "conveyor": hashing.conveyor_hashing(folder, max(repeats, 3), log)
            }
            if dvc is not None:
                results["hashing"]["dvc"] = hashing.dvc_add(folder, work, env, dvc, repeats, log)
        if "tracking" in sections:
            results["tracking"] = {
                "conveyor": tracking.conveyor_tracking(work, env, startup_repeats, log)
            }
            if mlflow_bin is not None:
                calls = 500 if args.quick else tracking.CALLS
                log(f"tracking: mlflow.log_metric x {calls} (sqlite store)")
                results["tracking"]["mlflow"] = tracking.mlflow_tracking(
                    work, env, mlflow_bin, calls
                )
    except BaseException:
        # Keep what was measured before the failure, without touching the last good results.
        environments.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        failed = environments.RESULTS_DIR / "failed.json"
        failed.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        log(f"failed; partial results in {failed.relative_to(environments.REPO_ROOT)}")
        raise
    finally:
        if not args.keep:
            _cleanup(work)
    results["meta"]["load_after"] = load_average()
    results["meta"]["duration_s"] = time.perf_counter() - started
    md_path, json_path = _save(results, stem)
    sys.stdout.write(md_path.read_text())
    log(f"wrote {md_path.relative_to(environments.REPO_ROOT)} and {json_path.name}")
    return 0


def _subset(folder: Path, target: Path, files: int) -> Path:
    """Hard links to the first ``files`` files of ``folder``, in a folder of their own."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in sorted(folder.iterdir())[:files]:
        os.link(path, target / path.name)
    return target


if __name__ == "__main__":
    sys.exit(main())
