"""Gate expressions of conveyor.yaml, parsed when the file is loaded.

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
