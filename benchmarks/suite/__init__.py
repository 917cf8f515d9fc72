"""Conveyor's benchmark suite: the same work timed under Conveyor, DVC and MLflow in one run.

``benchmarks/run.py`` is the entry point (``make bench``). Modules, one measurement family each:
``timing`` (wall clock of a CLI process), ``environments`` (venvs, telemetry off, HOME in work/),
``data`` (generated CSVs), ``pipelines`` (the 5-step pipeline as bare scripts, DVC stages and
Conveyor steps), ``hashing``, ``tracking``, ``startup`` and ``report`` (table and goals).
"""
