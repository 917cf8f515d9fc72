"""A sticky canary on a field with few values: either the candidate gets callers, or the
gateway says, naming the field, that it gets none."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from conveyor.gateway.batching import Batcher
from conveyor.gateway.routing import Router, Split, sticky_bucket, sticky_shortfall
from conveyor.gateway.runtime import Served

REGIONS = ["north", "south", "west"]


def served(version: int, regions: list[str]) -> Served:
    signature: dict[str, Any] = {
        "inputs": [
            {"name": "tenure", "type": "number", "nullable": False},
            {"name": "region", "type": "string", "nullable": False, "categories": regions},
        ],
        "output": {"classes": [0, 1]},
    }
    return Served(
        model="churn",
        version=version,
        signature=signature,
        task="classification",
        digest=f"d{version}",
        native=None,
        onnx=None,
    )


def router() -> Router:
    return Router(make_batcher=lambda s: Batcher(s, max_rows=8, max_delay_ms=1.0))


def apply_canary(r: Router, version: int, regions: list[str], weight: float) -> None:
    r.apply(
        {("churn", "production"): 1},
        {("churn", 1): served(1, regions), ("churn", version): served(version, regions)},
        {},
        {("churn", "production"): Split("canary", version, weight, "region")},
    )


@pytest.mark.parametrize("version", range(2, 12))
def test_a_ten_percent_sticky_canary_on_three_values_gets_callers_or_a_warning(
    version: int, caplog: pytest.LogCaptureFixture
) -> None:
    r = router()
    with caplog.at_level(logging.WARNING, logger="conveyor.gateway"):
        apply_canary(r, version, REGIONS, 10.0)
    route = r.route("churn", "production")
    assert route is not None and route.candidate is not None
    to_candidate = [v for v in REGIONS if route.pick(v) is route.candidate]
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    if to_candidate:
        assert warnings == []
    else:
        (warning,) = warnings
        assert "sticky field 'region'" in warning and "3 known values" in warning
        assert f"churn v{version}" in warning and "at least 33%" in warning
        assert "environment production" in warning
    # each caller stays on one version
    assert all(route.pick(v) is route.pick(v) for v in REGIONS)


def test_the_salt_moves_the_split_between_releases() -> None:
    # unsalted, the same three values would fall on the same side of every canary
    sides = {
        tuple(sticky_bucket(v, "churn", version) < 10.0 for v in REGIONS)
        for version in range(2, 42)
    }
    assert len(sides) > 1
    # and within one release a key always lands in the same place
    assert sticky_bucket("north", "churn", 7) == sticky_bucket("north", "churn", 7)


def test_shortfall_is_silent_when_a_value_reaches_the_candidate_or_values_are_unknown() -> None:
    version = next(v for v in range(2, 200) if sticky_bucket("north", "churn", v) < 10.0)
    assert sticky_shortfall("region", REGIONS, 10.0, "churn", version) is None
    assert sticky_shortfall("customer_id", [], 10.0, "churn", version) is None
    missed = next(
        v for v in range(2, 200) if all(sticky_bucket(x, "churn", v) >= 10.0 for x in REGIONS)
    )
    message = sticky_shortfall("region", REGIONS, 10.0, "churn", missed)
    assert message is not None and "'region'" in message and "no caller" in message


def test_a_field_with_many_values_splits_near_its_weight(caplog: pytest.LogCaptureFixture) -> None:
    customers = [f"customer-{i}" for i in range(2000)]
    r = router()
    with caplog.at_level(logging.WARNING, logger="conveyor.gateway"):
        apply_canary(r, 2, customers, 10.0)
    route = r.route("churn", "production")
    assert route is not None and route.candidate is not None
    share = sum(route.pick(c) is route.candidate for c in customers) / len(customers)
    assert 0.07 < share < 0.13
    assert not [rec for rec in caplog.records if rec.levelno == logging.WARNING]
