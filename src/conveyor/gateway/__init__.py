"""The gateway: serves each environment's model versions as the store routes them.

See ``app.py`` (endpoints), ``routing.py`` (following the store), ``runtime.py`` (a loaded
version), ``batching.py``, ``requestlog.py``, ``metrics.py``, ``v2.py`` and ``openapi.py``.
"""
