"""Files that run Conveyor somewhere else: CI workflows (``conveyor export``)."""
