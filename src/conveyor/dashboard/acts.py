"""The dashboard's acts: promote, pause, resume, abort a release, roll back an environment.

Each goes through ``Releases``, which changes the store and writes its event in one
transaction; the event's ``why`` carries the reason given and who gave it (the person's name
from the confirmation form, and "via the dashboard"), and its ``actor`` is the account the
dashboard runs as. A GET of an act's address is its confirmation page, which says what will
happen before anything does.
"""

from __future__ import annotations

from typing import Any

from conveyor.dashboard.errors import BadRequest, NotFound
from conveyor.dashboard.views import Context, View

__all__ = ["FIELDS", "act_on_release", "confirm_release", "confirm_rollback", "roll_back"]

#: The confirmation form's fields and their longest lengths.
FIELDS = {"who": 100, "reason": 500}

_WHAT = {
    "promote": "send all of {env}'s traffic to version {to} now, ending the release",
    "pause": "hold the release at its current step; traffic stays as it is until resumed",
    "resume": "continue the release from its current step (the step's clock restarts)",
    "abort": "stop the release and put {env} back on version {frm}, as a rollback would",
}


def _release(ctx: Context, release_id: str) -> Any:
    from conveyor.exceptions import ReleaseError

    try:
        return ctx.releases().get(release_id)
    except ReleaseError as exc:
        raise NotFound(str(exc)) from None


def confirm_release(ctx: Context, release_id: str, act: str) -> View:
    view = _release(ctx, release_id)
    what = _WHAT[act].format(
        env=f"{view.model}@{view.environment}", to=view.to_version, frm=view.from_version
    )
    return View(
        "confirm.html.j2",
        f"{act.capitalize()} release {release_id}?",
        {
            "act": act,
            "target": f"release {release_id} ({view.model}@{view.environment}, "
            f"v{view.from_version} → v{view.to_version}, {view.state})",
            "what": what,
            "possible": view.active,
            "action": f"/releases/{release_id}/{act}",
            "back": f"/releases/{release_id}",
        },
    )


def confirm_rollback(ctx: Context, model: str, environment: str) -> View:
    serving = ctx.registry.alias(model, environment)
    if serving is None:
        raise NotFound(f"{model}@{environment} serves nothing; the overview lists what is served.")
    return View(
        "confirm.html.j2",
        f"Roll back {model}@{environment}?",
        {
            "act": "rollback",
            "target": f"{model}@{environment}, serving version {serving}",
            "what": "put the environment back on the version it served before (an active "
            "release is rolled back; otherwise the alias returns to its previous version)",
            "possible": True,
            "action": f"/environments/{model}/{environment}/rollback",
            "back": "/",
        },
    )


def _why(act: str, fields: dict[str, str]) -> str:
    who = fields.get("who", "").strip()
    if not who:
        raise BadRequest("Form field 'who' is empty; say who you are, for the audit log.")
    reason = fields.get("reason", "").strip() or f"{act} by hand"
    return f"{reason} (by {who}, via the dashboard)"


def act_on_release(
    ctx: Context, release_id: str, act: str, fields: dict[str, str]
) -> dict[str, Any]:
    """Promote, pause, resume or abort; returns the release as it is afterwards.

    Raises:
        NotFound: no such release.
        BadRequest: no name given, or the release cannot do that now (it has finished, or is
            already paused).
    """
    from conveyor.exceptions import ReleaseError

    _release(ctx, release_id)
    why = _why(act, fields)
    manager = ctx.releases()
    try:
        view = getattr(manager, act)(release_id, reason=why)
    except ReleaseError as exc:
        raise BadRequest(str(exc)) from None
    return {"act": act, "release": view.to_dict()}


def roll_back(ctx: Context, model: str, environment: str, fields: dict[str, str]) -> dict[str, Any]:
    """Put an environment back on its previous version.

    Raises:
        NotFound: the environment serves nothing.
        BadRequest: no name given, or there is nothing earlier to go back to.
    """
    from conveyor.exceptions import ReleaseError

    if ctx.registry.alias(model, environment) is None:
        raise NotFound(f"{model}@{environment} serves nothing; the overview lists what is served.")
    why = _why("rollback", fields)
    try:
        result = ctx.releases().rollback(model, environment, reason=why)
    except ReleaseError as exc:
        raise BadRequest(str(exc)) from None
    return {"act": "rollback", **result}
