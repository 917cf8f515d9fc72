"""`conveyor monitor` and `watch`: how the served model is doing, and the controller that acts
on it (releases, alerts, retraining) until stopped."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.cli.options import JsonOpt, ModelOpt, ProjectOpt, UrlOpt, echo_json, load_project

if TYPE_CHECKING:
    from conveyor.controller.loop import Act


def monitor(
    name: ModelOpt = None,
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
    fresh: Annotated[
        bool,
        typer.Option("--fresh", help="Compute the report even if the kept one still holds."),
    ] = False,
    json_out: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Drift of live inputs and predictions against the training data, and live quality.

    The last report of each model, environment and window is kept with a fingerprint of what
    it was computed from (the routing, the log's files, conveyor.yaml, the clock for a window
    of seconds); while that still matches, the kept report is printed at once. ``--html``
    plots the window's rows, so it always computes.
    """
    from conveyor.actions.models import open_registry
    from conveyor.config.deploy import parse_duration
    from conveyor.config.monitor import WindowConfig
    from conveyor.monitor.kept import look
    from conveyor.monitor.report import prometheus_text

    config = load_project(project)
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
        seen = look(
            config,
            registry,
            model=name,
            environment=env,
            window=spec,
            fresh=fresh or html is not None,
        )
    report = seen.report
    if html is not None and seen.seen is not None:
        from conveyor.monitor.html import write_html

        write_html(seen.seen.report, seen.seen.reference, seen.seen.window, html)
    if metrics is not None:
        from conveyor.store.atomic import write_text

        write_text(metrics, prometheus_text(report))
    if json_out:
        echo_json(report)
        return
    from conveyor.cli.console import print_kept, print_monitor

    print_monitor(report)
    if seen.kept is not None:
        print_kept(seen.kept)
    if html is not None:
        typer.echo(f"Wrote {html}")


def watch(
    interval: Annotated[float, typer.Option(help="Seconds between turns.")] = 1.0,
    monitor_every: Annotated[
        float, typer.Option(help="Seconds between monitoring reports and alert checks.")
    ] = 30.0,
    once: Annotated[bool, typer.Option(help="One turn, then exit.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT", help="Serve the monitoring figures at http://HOST:PORT/metrics."
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            metavar="HOST",
            help="The address --metrics-port listens on; 0.0.0.0 for Prometheus in a cluster.",
        ),
    ] = "127.0.0.1",
    url: UrlOpt = None,
    project: ProjectOpt = None,
) -> None:
    """The controller: advance releases until stopped (one per project, by a lease)."""
    import signal
    import threading

    from conveyor.controller import run_controller
    from conveyor.gateway.server import load_token
    from conveyor.release.checks import GatewayChecks

    config = load_project(project)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    gateway = url or os.environ.get("CONVEYOR_GATEWAY_URL") or "http://127.0.0.1:8000"
    typer.echo(f"Watching project {config.project!r} every {interval:g}s (gateway {gateway})")
    try:
        run_controller(
            config,
            checks=GatewayChecks(config.root, gateway, token=load_token(config)),
            interval=interval,
            monitor_every=monitor_every,
            once=once,
            stop=stop,
            report=lambda o: typer.echo(describe_act(o)),
            metrics=(metrics_host, metrics_port) if metrics_port else None,
        )
    except KeyboardInterrupt:
        pass


def describe_act(act: Act) -> str:
    """One line for what the controller just did, as `conveyor watch` prints it."""
    kind = act.get("act")
    if kind == "release":
        return f"release {act['id']}: {act['action']}  {act.get('why') or ''}".rstrip()
    if kind == "release_started":
        return (
            f"release {act['id']}: started, v{act['version']} to {act['environment']} "
            f"({act['strategy']})"
        )
    if kind == "retrain_started":
        return (
            f"retraining started ({'; '.join(act['causes'])}): pid {act.get('pid')}, "
            f"log {act.get('log')}"
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
