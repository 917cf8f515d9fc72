"""One function per command: the CLI, the dashboard and the controller call these, never each
other."""
