"""The ``gates:`` section: what a candidate model must pass to be registered.

Gate expressions are parsed when the file is loaded.

A gate is never ``eval``-ed: it is one of two shapes, read by a small tokenizer, so a typo is a
config error with its line rather than a surprise after training.

- a threshold: ``METRIC OP NUMBER`` such as ``roc_auc >= 0.80``;
- a comparison with what an environment serves: ``METRIC OP ENV.METRIC [± NUMBER]`` such as
  ``roc_auc >= production.roc_auc - 0.005``; the same metric on both sides, judged with a paired
  test on the candidate's holdout (see ``conveyor.gates``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from conveyor.config.base import ConfigModel, invalid
from conveyor.config.model import TASK_METRICS

OPERATORS = (">=", "<=", ">", "<")
EXPRESSION_HELP = (
    "write 'METRIC OP NUMBER' (such as 'roc_auc >= 0.80') or 'METRIC OP ENV.METRIC ± NUMBER' "
    "(such as 'roc_auc >= production.roc_auc - 0.005'), with OP one of >=, >, <=, <"
)

_TOKEN = re.compile(
    r"\s*(?:(?P<op>>=|<=|>|<)|(?P<num>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)|(?P<sign>[+-]))"
)


@dataclass(frozen=True)
class Threshold:
    """``metric op value``: the candidate's metric against a fixed number."""

    metric: str
    op: str
    value: float

    def holds(self, observed: float) -> bool:
        """Whether ``observed`` satisfies the bound."""
        return _compare(observed, self.op, self.value)


@dataclass(frozen=True)
class Comparison:
    """``metric op env.metric + offset``: the candidate against what ``env`` serves."""

    metric: str
    op: str
    env: str
    offset: float

    @property
    def higher_wanted(self) -> bool:
        """True for ``>``/``>=``: the gate asks for a metric at least as high as the bound."""
        return self.op in (">", ">=")

    @property
    def strict(self) -> bool:
        """True for ``>``/``<``: the gate asks for a shown improvement, not just no loss."""
        return self.op in (">", "<")


def _compare(a: float, op: str, b: float) -> bool:
    return {">=": a >= b, ">": a > b, "<=": a <= b, "<": a < b}[op]


def parse_expression(text: str) -> Threshold | Comparison:
    """Parse a gate expression.

    Raises:
        ValueError: the text is not one of the two shapes; the message says what was expected
            and where the text went wrong.
    """
    tokens = _tokens(text)
    kinds = [kind for kind, _ in tokens]
    values = [value for _, value in tokens]
    if len(tokens) >= 3 and kinds[0] == "name" and "." in values[0]:
        raise ValueError(
            f"the left side must be the candidate's metric, got {values[0]!r}; put the "
            f"environment on the right: '{values[0].partition('.')[2]} >= {values[0]}'"
        )
    if kinds[:3] == ["name", "op", "num"] and len(tokens) == 3:
        return Threshold(values[0], values[1], float(values[2]))
    if kinds[:3] == ["name", "op", "sign"] and kinds[3:] == ["num"]:
        return Threshold(values[0], values[1], float(values[2] + values[3]))
    if kinds[:3] == ["name", "op", "name"] and "." in values[2]:
        metric, op = values[0], values[1]
        env, _, other = values[2].partition(".")
        if other != metric:
            raise ValueError(
                f"compare a metric with the same metric of the environment: "
                f"'{metric} {op} {env}.{metric}', not {env}.{other}"
            )
        rest = kinds[3:]
        if not rest:
            return Comparison(metric, op, env, 0.0)
        if rest == ["sign", "num"]:
            offset = float(values[4]) * (-1.0 if values[3] == "-" else 1.0)
            return Comparison(metric, op, env, offset)
    raise ValueError(f"cannot parse {text!r}: {EXPRESSION_HELP}")


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(
                f"cannot parse {text!r}: unexpected {text[pos:].strip()[:20]!r} at character "
                f"{pos + 1}; {EXPRESSION_HELP}"
            )
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    if not out:
        raise ValueError(f"the expression is empty; {EXPRESSION_HELP}")
    return out


_METRICS = "; ".join(f"{task}: {', '.join(names)}" for task, names in TASK_METRICS.items())


class FairnessConfig(ConfigModel):
    """The gap in one metric between the groups of one column must stay within a bound."""

    group: str = Field(description="The holdout column whose values form the groups compared.")
    metric: str = Field(
        description=f"The metric compared across groups, one the built-in evaluation reports "
        f"({_METRICS})."
    )
    max_gap: float = Field(
        description="The largest allowed difference between the best and worst group."
    )
    min_rows: int = Field(
        default=30,
        description="Groups with fewer holdout rows are left out of the comparison (and "
        "listed as left out).",
    )


class LatencyConfig(ConfigModel):
    """The candidate's single-row prediction time must stay within a budget."""

    p99_ms: float = Field(
        description="The budget for the 99th percentile of one-row predictions, in ms."
    )
    rows: int = Field(default=200, description="How many one-row predictions are timed.")


class SizeConfig(ConfigModel):
    """The model file must stay within a size budget."""

    max_mb: float = Field(description="The largest model file allowed, in megabytes.")


class GateConfig(ConfigModel):
    """One gate: an expression (``check``), or a fairness, latency or size budget."""

    shape: ClassVar[str] = "an expression such as 'roc_auc >= 0.80' or a mapping"
    shorthand_schema: ClassVar[dict[str, Any] | None] = {
        "type": "string",
        "pattern": r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*(>=|<=|>|<)",
        "description": "An expression such as 'roc_auc >= 0.80' or "
        "'roc_auc >= production.roc_auc - 0.005'.",
    }
    yaml_example: ClassVar[str] = """
gates:
  - roc_auc >= 0.70                                 # shorthand for {check: ...}
  - name: not worse than production
    check: roc_auc >= production.roc_auc - 0.01     # paired test on the same holdout
    on_inconclusive: pass
  - fairness: {group: homeownership, metric: recall, max_gap: 0.3}
  - latency: {p99_ms: 50}
  - size: {max_mb: 20}
"""

    name: str | None = Field(
        default=None, description="The name shown in reports; by default the gate written out."
    )
    check: str | None = Field(
        default=None,
        description="METRIC OP NUMBER (roc_auc >= 0.80) or METRIC OP ENV.METRIC ± NUMBER "
        "(roc_auc >= production.roc_auc - 0.005), OP one of >=, >, <=, <, METRIC one the "
        f"built-in evaluation reports ({_METRICS}); a gate written as a plain string means "
        "this key.",
    )
    fairness: FairnessConfig | None = Field(
        default=None, description="A bound on a metric's gap across the groups of a column."
    )
    latency: LatencyConfig | None = Field(
        default=None, description="A budget for the p99 of one-row predictions."
    )
    size: SizeConfig | None = Field(default=None, description="A budget for the model file.")
    alpha: float = Field(
        default=0.05,
        description="Significance level of the paired test a comparison gate runs, in (0, 0.5).",
    )
    on_inconclusive: Literal["fail", "pass"] = Field(
        default="fail",
        description="Comparison gates: the verdict when the paired test cannot tell the two "
        "models apart.",
    )

    _parsed: Threshold | Comparison | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"check": data} if isinstance(data, str) else data

    @field_validator("check")
    @classmethod
    def _check(cls, value: str) -> str:
        try:
            parse_expression(value)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return value

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, value: float) -> float:
        if not 0.0 < value < 0.5:
            raise invalid(f"expected a significance level in (0, 0.5) such as 0.05, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> GateConfig:
        given = [k for k in ("check", "fairness", "latency", "size") if getattr(self, k)]
        if len(given) != 1:
            raise invalid(
                "a gate is one expression (such as 'roc_auc >= 0.80') or a mapping with exactly "
                f"one of check, fairness, latency, size; got {', '.join(given) or 'none'}"
            )
        if self.check is not None:
            self._parsed = parse_expression(self.check)
        return self

    @property
    def kind(self) -> str:
        """threshold, compare, fairness, latency or size."""
        if isinstance(self._parsed, Comparison):
            return "compare"
        if isinstance(self._parsed, Threshold):
            return "threshold"
        return next(k for k in ("fairness", "latency", "size") if getattr(self, k))

    @property
    def expression(self) -> Threshold | Comparison | None:
        """The parsed ``check``, or None for the other kinds."""
        return self._parsed

    @property
    def label(self) -> str:
        """The name shown in reports: ``name`` if given, else the gate written out."""
        if self.name:
            return self.name
        if self.check:
            return self.check
        if self.fairness:
            f = self.fairness
            return f"fairness: {f.metric} gap across {f.group} <= {f.max_gap:g}"
        if self.latency:
            return f"latency: p99 <= {self.latency.p99_ms:g} ms"
        if self.size is None:
            raise AssertionError("validated to hold exactly one kind of gate")
        return f"size <= {self.size.max_mb:g} MB"
