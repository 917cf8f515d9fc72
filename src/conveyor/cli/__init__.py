"""The command line: ``main`` answers the fast no-op run and ``--version`` before anything heavy
loads; ``app`` is the Typer application, one module per command group (``project``,
``history``, ``ci``, ``serve``, ``releases``, ``monitor``, ``export``, ``data``, ``models``,
``config``) sharing ``options``; ``console`` shows results."""

from __future__ import annotations
