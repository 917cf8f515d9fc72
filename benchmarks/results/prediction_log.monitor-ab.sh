# before/after of the monitoring report over the 1M-row project, same harness (the new
# benchmark's child), alternating: PYTHONPATH picks the source tree. Before it:
#   mkdir -p /tmp/mon/base && git archive 59b90c3 src benchmarks | tar -x -C /tmp/mon/base
#   build_project(Path('/tmp/mon/project'), 1_000_000) from benchmarks/prediction_log_bench.py
for i in 1 2; do for t in /tmp/mon/base /work/wt-monitor; do
  echo "$(basename $t) load=$(cut -d' ' -f1 /proc/loadavg) $(cd /work/wt-monitor && PYTHONPATH=$t/src /work/main/.venv/bin/python -c "
import sys, json; sys.path.insert(0, '.')
from benchmarks.prediction_log_bench import monitor_seconds_1m
print(json.dumps(monitor_seconds_1m('/tmp/mon/project')))")"
done; done
