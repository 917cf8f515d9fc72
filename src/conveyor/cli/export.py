"""`conveyor export`: files for other tools (CI workflows, Docker, Kubernetes, Prometheus,
Grafana), written from the project's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.cli.options import ProjectOpt, load_project


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
    install: Annotated[
        str | None,
        typer.Option(
            metavar="SPEC",
            help="CI/docker: what follows 'pip install' instead of conveyor-ml==this version "
            "(a wheel's path, a git+https URL, index options).",
        ),
    ] = None,
    extra: Annotated[
        list[str] | None,
        typer.Option(metavar="EXTRA", help="CI/docker: a conveyor-ml extra besides those derived."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    project: ProjectOpt = None,
) -> None:
    """Write a CI workflow (runs 'conveyor ci'), a Dockerfile or Kubernetes manifests for the
    gateway, or Prometheus alert rules and a Grafana dashboard for its metrics."""
    config = load_project(project)
    root = Path(config.root)
    # An output path the user gives is relative to where they typed it, not to the project.
    target = output.resolve() if output is not None else None
    if kind in ("prometheus-rules", "grafana"):
        from conveyor.export.monitoring_files import write_monitoring

        _echo_written(write_monitoring(config, kind, target, force=force))
        return
    if kind in ("docker", "k8s"):
        from conveyor.export.deploy_files import write_deploy

        if kind == "k8s":
            if not image:
                raise typer.BadParameter("k8s needs --image (the gateway image to run).")
            options: dict[str, Any] = {
                "image": image,
                "replicas": replicas,
                "min_replicas": min(replicas, max_replicas),
                "max_replicas": max_replicas,
                "namespace": namespace,
                "port": port,
                "name": name,
            }
        else:
            options = {
                "port": port,
                "workers": workers,
                "python": python,
                "install": install,
                "extra": tuple(extra or ()),
            }
        _echo_written(write_deploy(config, kind, target, force=force, **options))
        return
    from conveyor.export.ci_files import write_ci
    from conveyor.export.install import install_comment, install_spec, pip_command

    spec = install_spec(config, install=install, extra=tuple(extra or ()))
    path = write_ci(
        kind,
        root,
        project=config.project,
        python=python,
        install=pip_command(root, spec),
        install_note=install_comment(spec),
        model=config.model.name if config.model is not None else None,
        token_env=config.serve.token_env,
        force=force,
        path=target,
    )
    typer.echo(f"Wrote {path}")


def _echo_written(written: list[Path]) -> None:
    for path in written:
        typer.echo(f"Wrote {path}")
    if not written:
        typer.echo("Up to date: nothing changed.")
