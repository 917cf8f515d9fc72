"""`conveyor deploy`, `rollback`, `releases` and `release show|step|pause|resume|promote|abort`:
moving a model version into an environment under its strategy, and steering it by hand."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from conveyor.cli.options import JsonOpt, ModelOpt, ProjectOpt, UrlOpt, echo_json, load_project

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig
    from conveyor.registry.registry import Registry
    from conveyor.release.releases import Releases

app = typer.Typer(
    help="One release: show, step, pause, resume, promote, abort.", no_args_is_help=True
)
ReleaseArg = Annotated[str, typer.Argument(metavar="RELEASE_ID", help="Release id.")]
ReasonOpt = Annotated[str, typer.Option(help="Why, for the audit log.")]


def _releases(config: ProjectConfig, registry: Registry, url: str | None) -> Releases:
    """Releases whose smoke requests and tests go to the gateway at ``url``."""
    from conveyor.gateway.server import load_token
    from conveyor.release.checks import GatewayChecks
    from conveyor.release.releases import Releases

    url = url or os.environ.get("CONVEYOR_GATEWAY_URL") or "http://127.0.0.1:8000"
    checks = GatewayChecks(config.root, url, token=load_token(config))
    return Releases(config, registry, checks=checks)


def _event_dict(event: Any) -> dict[str, Any]:
    return {"at": event.at.isoformat(), "kind": event.kind, "payload": event.payload or {}}


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
    reason: ReasonOpt = "",
    json_out: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Start a release of VERSION to an environment, under the strategy conveyor.yaml gives it."""
    from conveyor.actions.models import open_registry
    from conveyor.cli.console import print_outcomes, print_release
    from conveyor.config.deploy import parse_duration

    config = load_project(project)
    with open_registry(config) as registry:
        releases = _releases(config, registry, url)
        try:
            seconds = parse_duration(shadow) if shadow is not None else None
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--shadow") from None
        started = releases.start(name, version, to, reason=reason or "deploy", shadow_for=seconds)
        outcomes = releases.step(started.id) if started.active else []
        release = releases.get(started.id)
        events = [_event_dict(e) for e in releases.timeline(release.id)]
    if json_out:
        echo_json({"release": release.to_dict(), "outcomes": outcomes})
        return
    print_release(release.to_dict(), events)
    if outcomes:
        print_outcomes(outcomes)


def rollback(
    env: Annotated[str, typer.Argument(metavar="ENV", help="Environment.")],
    name: ModelOpt = None,
    reason: ReasonOpt = "",
    project: ProjectOpt = None,
) -> None:
    """Put an environment back on its previous version: alias and traffic in one transaction."""
    from conveyor.actions.models import open_registry
    from conveyor.release.releases import Releases

    config = load_project(project)
    model = name or (config.model.name if config.model else None)
    if not model:
        raise typer.BadParameter("Name the model with --model (conveyor.yaml has no model:).")
    with open_registry(config) as registry:
        done = Releases(config, registry).rollback(model, env, reason=reason)
    which = f" (release {done['release']} rolled back)" if done["release"] else ""
    typer.echo(f"{model}@{env} -> version {done['version']}{which}")


def releases(
    name: Annotated[
        str | None, typer.Option("--model", "-m", metavar="NAME", help="Only this model.")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    json_out: JsonOpt = False,
    project: ProjectOpt = None,
) -> None:
    """Releases, newest first, with their state and the candidate's share of traffic."""
    from conveyor.actions.models import list_releases
    from conveyor.actions.runs import read_project
    from conveyor.cli.console import print_releases

    rows = list_releases(read_project(project), model=name, limit=limit)
    if json_out:
        echo_json(rows)
    else:
        print_releases(rows)


@app.command("show")
def show(release_id: ReleaseArg, json_out: JsonOpt = False, project: ProjectOpt = None) -> None:
    """A release and its timeline: every step, analysis and traffic change."""
    from conveyor.actions.models import describe_release
    from conveyor.actions.runs import read_project
    from conveyor.cli.console import print_release

    release, events = describe_release(read_project(project), release_id)
    if json_out:
        echo_json({"release": release, "timeline": events})
    else:
        print_release(release, events)


@app.command("step")
def step(
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

    config = load_project(project)
    with open_registry(config) as registry:
        outcomes = _releases(config, registry, url).step(release_id)
    if json_out:
        echo_json(outcomes)
    else:
        print_outcomes(outcomes)


BY_HAND = {
    "pause": "Hold a release where it is (traffic unchanged) until resumed.",
    "resume": "Continue a paused release; its current step's clock starts again.",
    "promote": "Finish a release now: the candidate takes all traffic.",
    "abort": "Stop a release and return all traffic to the stable version.",
}


def _by_hand(action: str) -> Callable[..., None]:
    """The command for one of the `Releases` methods that take a release id and a reason."""

    def command(release_id: ReleaseArg, reason: ReasonOpt = "", project: ProjectOpt = None) -> None:
        from conveyor.actions.models import open_registry
        from conveyor.release.releases import Releases

        config = load_project(project)
        with open_registry(config) as registry:
            release = getattr(Releases(config, registry), action)(release_id, reason)
        typer.echo(f"{release.id}: {release.state}")

    command.__doc__ = BY_HAND[action]
    return command


for _action in BY_HAND:
    app.command(_action)(_by_hand(_action))
