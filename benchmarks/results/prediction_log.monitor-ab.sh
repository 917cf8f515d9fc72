# before/after of the monitoring report over the 1M-row project, same harness (the benchmark's
# child, monitor_seconds_1m, from this tree's benchmarks/), alternating: PYTHONPATH picks the
# source tree. Before it:
#   mkdir -p /tmp/mon1m/head && git archive 4d2a011 src | tar -x -C /tmp/mon1m/head
#   build_project(Path('/tmp/mon/project'), 1_000_000) from benchmarks/prediction_log_bench.py
# NOW: the window's end (the project's log spans the hour before its build).
NOW=${NOW:-2026-12-06T21:12:44+00:00}
PROJECT=${PROJECT:-/tmp/mon/project}
for i in 1 2 3; do for t in /tmp/mon1m/head /work/wt-mon; do
  echo "$(basename $t) $(cd /work/wt-mon && PYTHONPATH=$t/src /work/main/.venv/bin/python -c "
import sys, json; sys.path.insert(0, '.')
from benchmarks.prediction_log_bench import monitor_seconds_1m
print(json.dumps(monitor_seconds_1m('$PROJECT', '$NOW')))")"
done; done
