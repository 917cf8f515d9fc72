"""The command line: ``main`` answers the fast no-op run before anything heavy loads; ``app`` is
the Typer application, one module per command group; ``console`` shows results."""
