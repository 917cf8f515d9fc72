"""The dashboard (`conveyor ui`): server-rendered pages over the store, each with a JSON twin.

``app`` is the ASGI app and its routes, ``views`` one function per page, ``queries`` the
paginated reads, ``charts`` the SVG pictures, ``acts`` the token-guarded release acts,
``params`` the checks of every query parameter and form field, ``server`` runs it on uvicorn.
Templates extend the reports' shared frame; no JavaScript build, nothing from a CDN.
"""

from __future__ import annotations
