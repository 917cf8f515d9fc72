"""Webhook signatures cover a timestamp, so a captured call cannot be replayed later, and a
webhook without a secret is sent unsigned with a warning naming its rule."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.config.monitor import AlertCondition, AlertRule
from conveyor.monitor.alerts import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Alerter,
    evaluate,
    sign,
    verify_signature,
)
from conveyor.store.metadata import Store
from tests.monitor.webhooks import Receiver, serve_receiver

SECRET = "hook-key-0123"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver that checks each call the way the alerts docstring says: 401 unless the
    signature verifies and is fresh."""
    with serve_receiver(secret=SECRET) as state:
        yield state


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store("sqlite:///" + str(tmp_path / "meta.db")).open()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def errors_rule(url: str, secret_env: str | None) -> AlertRule:
    return AlertRule(
        name="errors", when=AlertCondition(error_rate=0.05), webhook=url, secret_env=secret_env
    )


BAD = {"enough": True, "error_rate": 0.5, "requests": 100, "version": 2}


def fire(store: Store, rule: AlertRule) -> list[dict[str, Any]]:
    alerter = Alerter(
        store, [rule], project="shop", model="churn", environment="production", retries=0
    )
    return alerter.process(evaluate([rule], BAD), BAD)


def test_a_signed_call_verifies_at_a_real_receiver_and_its_replay_does_not(
    store: Store, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    before = int(time.time())
    (event,) = fire(store, errors_rule(receiver.url, "HOOK_SECRET"))
    after = int(time.time())

    assert receiver.verdicts == [True] and event["delivered"] is True
    (call,) = receiver.calls
    body, header = call["body"], call["headers"][SIGNATURE_HEADER]
    stamp = int(call["headers"][TIMESTAMP_HEADER])
    assert before <= stamp <= after
    # what a receiver in any language computes: HMAC-SHA256 of "<timestamp>.<raw body>"
    digest = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"t={stamp},v1={digest}"
    assert json.loads(body)["alert"] == "errors"

    # the same call replayed six minutes later is refused; within five minutes it still passes
    assert verify_signature(body, header, SECRET, now=stamp + 299)
    assert not verify_signature(body, header, SECRET, now=stamp + 360)
    assert not verify_signature(body, header, SECRET, now=stamp - 360)  # from the future
    # a replay with a fresh t in the header does not match the signature
    fresh = int(time.time()) + 1
    assert not verify_signature(body, f"t={fresh},v1={digest}", SECRET, now=fresh)
    # the old body-only form, a wrong key, a changed body, and junk are refused
    legacy = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert not verify_signature(body, legacy, SECRET, now=stamp)
    assert not verify_signature(body, header, "other-key", now=stamp)
    assert not verify_signature(body + b" ", header, SECRET, now=stamp)
    assert not verify_signature(body, f"t={stamp}", SECRET, now=stamp)
    assert not verify_signature(body, f"t=soon,v1={digest}", SECRET, now=stamp)
    assert not verify_signature(body, "", SECRET, now=stamp)
    assert sign(body, SECRET, stamp) == header


def test_a_webhook_without_secret_is_sent_unsigned_with_one_warning_naming_the_rule(
    store: Store, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    rule = errors_rule(receiver.url, None)
    with caplog.at_level(logging.WARNING, logger="conveyor.monitor.alerts"):
        alerter = Alerter(store, [rule], project="shop", model="churn", environment="production")
        good = BAD | {"error_rate": 0.0}
        for report in (BAD, good, BAD):  # three changes, three calls
            alerter.process(evaluate([rule], report), report)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # at start, not on every call
    assert "'errors'" in warnings[0] and "secret_env" in warnings[0]
    assert "unsigned" in warnings[0]
    assert len(receiver.calls) == 3
    for call in receiver.calls:
        assert SIGNATURE_HEADER not in call["headers"] and TIMESTAMP_HEADER not in call["headers"]
    assert receiver.verdicts == [False, False, False]  # a checking receiver refuses them
