"""Alert rules over a monitor report: which rules hold, and telling someone when that changes.

An alert fires once, when its rule starts to hold, and resolves once, when it stops. A rule with
``for`` (like a Prometheus rule's) fires only once its condition has held on every report for
that long, and resolves only once it has been false for ``resolve_for`` (by default ``for``):
a metric that hovers at its bound pages once, not on every crossing. The wait is an
``alert.pending`` event (its ``since``), and a flip back before it ends one with state
``cancelled``. All of the state lives in the audit log (the alert's last ``alert.fired``,
``alert.resolved`` or ``alert.pending`` event), not in the process, so a restarted controller
neither pages twice nor restarts a wait. A rule with a webhook
also POSTs each change as JSON, signed with HMAC-SHA256 when the rule names a secret, so that the
receiver can tell Conveyor's calls from anyone else's (see :func:`verify_signature`).

Signing (as Stripe's and Slack's webhooks do): each call carries ``X-Conveyor-Timestamp``, the
Unix time in whole seconds when it was sent, and ``X-Conveyor-Signature: t=<timestamp>,v1=<hex>``,
where ``<hex>`` is the HMAC-SHA256, keyed by the secret, of the bytes ``<timestamp>.<body>`` (the
timestamp's decimal digits, a dot, then the raw body exactly as received). The timestamp is under
the signature, so a captured call cannot be replayed later with a fresh time. A receiver:

1. reads the raw body before parsing any JSON;
2. takes ``t`` and ``v1`` from the signature header (a ``v1`` it does not recognise, or no ``t``,
   means reject);
3. recomputes the HMAC over ``f"{t}.".encode() + body`` and compares it with ``v1`` in constant
   time (``hmac.compare_digest``);
4. rejects a call whose ``t`` is more than five minutes from its own clock (either way), which
   bounds how long a captured call could be replayed; a receiver that must refuse every replay
   also remembers the signatures it accepted within that window.

:func:`verify_signature` does steps 2 to 4 (it remembers no past calls). A rule with a webhook
but no ``secret_env`` still sends, unsigned (no signature or timestamp header), and the
controller logs a warning naming the rule once when it starts: such a receiver cannot tell
Conveyor's calls from a forgery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import select

from conveyor.exceptions import MonitorError
from conveyor.store import events as ev
from conveyor.store import models as m
from conveyor.store.records import utcnow

if TYPE_CHECKING:
    from conveyor.config.monitor import AlertRule
    from conveyor.monitor.report import MonitorReport
    from conveyor.store.metadata import Store

__all__ = [
    "ENTITY",
    "EVENT_HEADER",
    "FIRED",
    "PENDING",
    "RESOLVED",
    "SIGNATURE_HEADER",
    "SIGNATURE_TOLERANCE",
    "TIMESTAMP_HEADER",
    "AlertState",
    "Alerter",
    "evaluate",
    "sign",
    "verify_signature",
]

ENTITY = "alert"
FIRED, RESOLVED, PENDING = ev.ALERT_FIRED, ev.ALERT_RESOLVED, ev.ALERT_PENDING
EVENT_HEADER = "X-Conveyor-Event"
SIGNATURE_HEADER = "X-Conveyor-Signature"
TIMESTAMP_HEADER = "X-Conveyor-Timestamp"
SIGNATURE_TOLERANCE = 300.0  # seconds a receiver accepts between a call's timestamp and its clock
_SCHEME = "v1"

log = logging.getLogger("conveyor.monitor.alerts")


@dataclass(frozen=True)
class AlertState:
    """One rule judged on one report; ``holds`` is None when the report cannot tell."""

    name: str
    holds: bool | None
    value: float | None
    bound: float | None
    summary: str


def evaluate(rules: Sequence[AlertRule], report: MonitorReport) -> list[AlertState]:
    """Judge each rule on a monitor report (``conveyor.monitor.report.MonitorReport``).

    A report without enough served rows (``report["enough"]`` false) judges nothing: every
    state is None, so alerts keep the state they had. So does a rule whose input the report
    lacks (no drift report, a live metric without labels yet, no latency).

    Args:
        rules: the ``monitor.alerts`` of conveyor.yaml.
        report: the monitor's report for one model and environment.

    Returns:
        One state per rule, in the rules' order.
    """
    if not report.get("enough"):
        rows = report.get("rows")
        why = "not enough data in the window"
        if rows is not None:
            why = f"not enough data: {rows} served rows in the window"
        return [AlertState(rule.name, None, None, None, why) for rule in rules]
    return [_evaluate(rule, report) for rule in rules]


def _evaluate(rule: AlertRule, report: MonitorReport) -> AlertState:
    when = rule.when
    kind = when.kind
    drift = report.get("drift")
    if kind == "drift_share":
        bound = _bound(when.drift_share)
        share = _number(drift.get("share_drifted")) if drift else None
        if drift is None or share is None:
            return AlertState(rule.name, None, None, bound, "no drift report")
        drifted, total = len(drift.get("drifted") or []), len(drift.get("columns") or {})
        of = f"{drifted} of {total} features" if total else f"{drifted} features"
        holds = share >= bound
        op = ">=" if holds else "<"
        return AlertState(
            rule.name, holds, share, bound, f"{of} drift: share {share:.3g} {op} {bound:.3g}"
        )
    if kind == "column":
        column = str(when.column)
        if not drift:
            return AlertState(rule.name, None, None, None, "no drift report")
        entry = (drift.get("columns") or {}).get(column)
        holds = column in (drift.get("drifted") or [])
        if not entry and not holds:
            return AlertState(
                rule.name, None, None, None, f"column {column!r} is not in the drift report"
            )
        psi = (entry.get("stats") or {}).get("psi") if entry else None
        value = _number(psi.get("statistic")) if psi else None
        limit = _number(psi.get("threshold")) if psi else None
        detail = f" (psi {value:.3g})" if value is not None else ""
        method = entry.get("method") if entry else None
        how = f", by {method}" if holds and method else ""
        verdict = "drifts" if holds else "does not drift"
        return AlertState(
            rule.name, holds, value, limit, f"column {column!r} {verdict}{detail}{how}"
        )
    if kind == "metric":
        metric, bound = str(when.metric), _bound(when.below)
        quality = report.get("quality") or {}
        value = _number((quality.get("metrics") or {}).get(metric))
        if value is None:
            labelled = quality.get("labelled", 0)
            return AlertState(
                rule.name, None, None, bound, f"no live {metric} yet ({labelled} labelled rows)"
            )
        holds = value < bound
        op = "<" if holds else ">="
        return AlertState(
            rule.name, holds, value, bound, f"live {metric} {value:.3g} {op} {bound:.3g}"
        )
    if kind == "error_rate":
        bound = _bound(when.error_rate)
        value = _number(report.get("error_rate"))
        if value is None:
            return AlertState(rule.name, None, None, bound, "no error rate in the report")
        holds = value > bound
        op = ">" if holds else "<="
        requests = report.get("requests")
        return AlertState(
            rule.name,
            holds,
            value,
            bound,
            f"error rate {value:.3g} {op} {bound:.3g} ({requests} requests)",
        )
    if kind == "p99_ms":
        bound = _bound(when.p99_ms)
        value = _number(report.get("p99_ms"))
        if value is None:
            return AlertState(rule.name, None, None, bound, "no latency in the report")
        holds = value > bound
        op = ">" if holds else "<="
        return AlertState(
            rule.name, holds, value, bound, f"p99 latency {value:.4g} ms {op} {bound:.4g} ms"
        )
    raise MonitorError(f"Alert {rule.name!r} has a condition Conveyor cannot judge: {kind!r}.")


def _bound(value: float | None) -> float:
    if value is None:  # AlertCondition validates that the chosen condition has its number
        raise MonitorError("An alert condition has no bound; check conveyor.yaml's monitor.alerts.")
    return float(value)


def _number(value: Any) -> float | None:
    """A finite float, or None (a missing value, NaN or infinity cannot be judged or sent)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class Alerter:
    """Turns alert states into ``alert.fired``/``alert.resolved`` events and webhook calls.

    Each alert is the store entity ``("alert", "<model>@<environment>:<name>")``; its last event
    says whether it is firing, so a new Alerter over the same store (a restarted controller)
    carries on where the last one stopped.

    Args:
        store: the open metadata store.
        rules: the ``monitor.alerts`` of conveyor.yaml.
        project: the project's name, sent in each webhook.
        model: the monitored model's name.
        environment: the monitored environment.
        timeout: seconds for each webhook call (connect, send and answer each).
        retries: further attempts after a connection error or a 5xx answer (never after a
            4xx); up to ``retries + 1`` calls in all.
        backoff: seconds before the first retry, doubled before each next one.
        sleep: waits between attempts (``time.sleep``; tests pass one that only records).
    """

    def __init__(
        self,
        store: Store,
        rules: Sequence[AlertRule],
        *,
        project: str,
        model: str,
        environment: str,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0:
            raise MonitorError(f"retries is {retries!r}; pass 0 or more.")
        self.store = store
        self.rules = {rule.name: rule for rule in rules}
        self.project = project
        self.model = model
        self.environment = environment
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        self._clock = time.time
        for rule in rules:
            if rule.webhook is not None and rule.secret_env is None:
                log.warning(
                    "alert %r sends its webhook unsigned: it has no secret_env, so the receiver "
                    "cannot tell Conveyor's calls from a forged or replayed one; set secret_env "
                    "to the name of an environment variable holding a shared key.",
                    rule.name,
                )

    def entity_id(self, name: str) -> str:
        """The alert's id in the audit log: ``<model>@<environment>:<name>``."""
        return f"{self.model}@{self.environment}:{name}"

    def firing(self, name: str) -> bool:
        """Whether the alert's last event is ``alert.fired``."""
        with self.store.session() as session:
            kind = session.scalars(
                select(m.Event.kind)
                .where(
                    m.Event.entity == ENTITY,
                    m.Event.entity_id == self.entity_id(name),
                    m.Event.kind.in_((FIRED, RESOLVED)),
                )
                .order_by(m.Event.id.desc())
                .limit(1)
            ).first()
        return kind == FIRED

    def pending(self, name: str) -> tuple[bool, datetime] | None:
        """The change the alert waits out: (whether the rule holds, since when), or None.

        Only a rule with ``for``/``resolve_for`` waits; its wait is its last event when that is
        an ``alert.pending`` whose ``holds`` differs from the alert's state.
        """
        with self.store.session() as session:
            last = session.scalars(
                select(m.Event)
                .where(
                    m.Event.entity == ENTITY,
                    m.Event.entity_id == self.entity_id(name),
                    m.Event.kind.in_((FIRED, RESOLVED, PENDING)),
                )
                .order_by(m.Event.id.desc())
                .limit(1)
            ).first()
        if last is None or last.kind != PENDING:
            return None
        payload = last.payload or {}
        holds = bool(payload.get("holds"))
        if payload.get("state") != "pending" or holds == self.firing(name):
            return None
        return holds, datetime.fromisoformat(str(payload["since"]))

    def process(
        self,
        states: Sequence[AlertState],
        report: MonitorReport,
        *,
        now: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Record and send what changed: a rule that starts or stops holding (for ``for``, or
        ``resolve_for``, without a break).

        A state of None changes nothing, not even a wait under way (a report that cannot tell
        neither confirms nor breaks it). A state equal to the alert's own changes nothing but
        cancels a wait. Each fire or resolve is one event whose payload is the webhook's body
        plus how its delivery went: ``delivered`` (None without a webhook), ``attempts``,
        ``status`` (the last HTTP status) and ``error``. A failed delivery is recorded, not
        raised, and not retried on a later call: the event marks the change as told.

        Args:
            states: from :func:`evaluate`, for this Alerter's rules.
            report: the report they were judged on (for its ``version``).
            now: when the report was judged (the controller's turn); now by default.

        Returns:
            The events written, each ``{"kind", "entity_id", **payload}``.

        Raises:
            MonitorError: a state names a rule this Alerter was not given.
            StoreError: the event cannot be written.
        """
        at = now or utcnow()
        written: list[dict[str, Any]] = []
        for state in states:
            rule = self.rules.get(state.name)
            if rule is None:
                raise MonitorError(
                    f"The alert state {state.name!r} names no rule of this Alerter "
                    f"(rules: {', '.join(map(repr, self.rules)) or 'none'})."
                )
            if state.holds is None:
                continue
            firing = self.firing(rule.name)
            waiting = self.pending(rule.name)
            if state.holds == firing:
                if waiting is not None:  # it flipped back before its wait ended
                    written.append(self._wait(rule, state, "cancelled", at, at))
                continue
            wait = rule.for_ if state.holds else rule.resolve_for
            wait = rule.for_ if wait is None else wait
            since = waiting[1] if waiting is not None else at
            if wait > 0 and (at - since).total_seconds() < wait:
                if waiting is None:
                    written.append(self._wait(rule, state, "pending", since, at))
                continue
            written.append(self._change(rule, state, report, at))
        return written

    def _wait(
        self, rule: AlertRule, state: AlertState, what: str, since: datetime, at: datetime
    ) -> dict[str, Any]:
        payload = {
            "alert": rule.name,
            "state": what,
            "holds": state.holds,
            "since": since.isoformat(),
            "value": _number(state.value),
            "bound": _number(state.bound),
            "summary": state.summary,
        }
        entity_id = self.entity_id(rule.name)
        with self.store.session() as session:
            self.store.add_event(session, PENDING, ENTITY, entity_id, payload, at=at)
        return {"kind": PENDING, "entity_id": entity_id, **payload}

    def _change(
        self,
        rule: AlertRule,
        state: AlertState,
        report: MonitorReport,
        at: datetime,
    ) -> dict[str, Any]:
        kind = FIRED if state.holds else RESOLVED
        body = {
            "alert": rule.name,
            "state": "firing" if state.holds else "resolved",
            "severity": rule.severity,
            "model": self.model,
            "environment": self.environment,
            "version": report.get("version"),
            "value": _number(state.value),
            "bound": _number(state.bound),
            "summary": state.summary,
            "at": at.isoformat(),
            "project": self.project,
        }
        delivery: dict[str, Any] = {
            "delivered": None,
            "attempts": 0,
            "status": None,
            "error": None,
        }
        if rule.webhook is not None:
            delivery = self._deliver(rule, body, "fired" if state.holds else "resolved")
        payload = {**body, **delivery}
        entity_id = self.entity_id(rule.name)
        with self.store.session() as session:
            self.store.add_event(session, kind, ENTITY, entity_id, payload, at=at)
        return {"kind": kind, "entity_id": entity_id, **payload}

    def _deliver(self, rule: AlertRule, body: dict[str, Any], event: str) -> dict[str, Any]:
        """POST the body to the rule's webhook; how it went, for the event's payload."""
        result: dict[str, Any] = {"delivered": False, "attempts": 0, "status": None, "error": None}
        headers = {"Content-Type": "application/json", EVENT_HEADER: event}
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
        secret: str | None = None
        if rule.secret_env is not None:
            secret = os.environ.get(rule.secret_env)
            if not secret:
                state = "is empty" if secret == "" else "is not set"
                result["error"] = (
                    f"The environment variable {rule.secret_env!r} (secret_env of alert "
                    f"{rule.name!r}) {state}, so the webhook was not called; set it to the key "
                    "the receiver checks signatures with."
                )
                return result
        url = str(rule.webhook)
        with httpx.Client(timeout=self.timeout) as client:
            for attempt in range(1, self.retries + 2):
                if attempt > 1:
                    self._sleep(self.backoff * 2 ** (attempt - 2))
                result["attempts"] = attempt
                if secret is not None:  # each attempt is stamped when it leaves, retries too
                    stamp = int(self._clock())
                    headers[TIMESTAMP_HEADER] = str(stamp)
                    headers[SIGNATURE_HEADER] = sign(data, secret, stamp)
                try:
                    response = client.post(url, content=data, headers=headers)
                except httpx.TransportError as exc:
                    result["status"] = None
                    result["error"] = f"{type(exc).__name__}: {exc}"
                    continue
                except httpx.InvalidURL as exc:
                    result["error"] = f"the webhook URL is not usable: {exc}"
                    return result
                status = response.status_code
                result["status"] = status
                if 200 <= status < 300:
                    result["delivered"], result["error"] = True, None
                    return result
                result["error"] = f"the webhook answered {status} {response.reason_phrase}".rstrip()
                if status < 500:  # the receiver refused this call; sending it again won't help
                    return result
        return result


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The ``X-Conveyor-Signature`` of a call sent at ``timestamp`` (Unix seconds):
    ``t=<timestamp>,v1=<hex>``, the hex HMAC-SHA256 of ``b"<timestamp>." + body`` keyed by
    secret."""
    stamp = int(timestamp)
    digest = hmac.new(
        secret.encode("utf-8"), f"{stamp}.".encode("ascii") + body, hashlib.sha256
    ).hexdigest()
    return f"t={stamp},{_SCHEME}={digest}"


def verify_signature(
    body: bytes,
    header: str,
    secret: str,
    *,
    tolerance: float = SIGNATURE_TOLERANCE,
    now: float | None = None,
) -> bool:
    """Whether a webhook call came from Conveyor, recently: check it before trusting the call.

    Compute it over the raw request body, exactly as received (before any JSON parsing). The
    timestamp is read from the signature header itself (``t=``), where the HMAC covers it; the
    ``X-Conveyor-Timestamp`` header repeats it for logs and must not be trusted on its own. A
    receiver in Flask, for example::

        ok = verify_signature(request.get_data(), request.headers.get(SIGNATURE_HEADER, ""),
                              os.environ["CONVEYOR_WEBHOOK_SECRET"])

    Args:
        body: the request's body bytes.
        header: the ``X-Conveyor-Signature`` header, ``"t=<unix seconds>,v1=<hex>"``.
        secret: the key named by the alert's ``secret_env``.
        tolerance: the most seconds the timestamp may be from ``now``, either way (five
            minutes by default); an older call is refused as a possible replay.
        now: the receiver's clock in Unix seconds; ``time.time()`` by default.

    Returns:
        True only when the header's ``v1`` is the HMAC-SHA256 of ``<t>.<body>`` under the
        secret and ``t`` is within ``tolerance`` of ``now``.
    """
    if not isinstance(header, str):
        return False
    fields: dict[str, str] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep and key not in fields:
            fields[key] = value
    stamp, given = fields.get("t", ""), fields.get(_SCHEME)
    if given is None or not stamp.isascii() or not stamp.isdigit():
        return False
    clock = time.time() if now is None else now
    if abs(clock - int(stamp)) > tolerance:
        return False
    expected = sign(body, secret, int(stamp)).encode("ascii")
    return hmac.compare_digest(expected, f"t={stamp},{_SCHEME}={given}".encode("utf-8", "replace"))
