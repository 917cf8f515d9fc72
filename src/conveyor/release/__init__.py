"""Releases: strategies (direct, blue-green, canary, shadow), live analysis, rollback.

``releases.py`` holds the state machine and is the only writer of the ``traffic`` table;
``analysis.py`` judges a candidate against the stable version from the request log;
``checks.py`` runs an environment's smoke requests and integration tests.
"""
