"""report: the metrics as a Markdown table."""

from __future__ import annotations

import json
import sys

with open(sys.argv[1]) as f:
    metrics = json.load(f)
lines = ["# Report", "", "| metric | value |", "|---|---|"]
lines += [f"| {key} | {value} |" for key, value in metrics.items()]
with open(sys.argv[2], "w") as f:
    f.write("\n".join(lines) + "\n")
print("report: written")
