"""Evaluation: metrics, paired comparisons and plots, computed from arrays with no IO."""
