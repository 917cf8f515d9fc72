"""The interactive ``/docs`` page: Swagger UI from the installed ``swagger-ui-py`` package.

The page loads its script and style from ``/docs/static/`` on this gateway, never from a CDN
(gateways often run where the internet is not reachable, and a page pulling code from a third
party is one more thing to trust). Only the files named in ``FILES`` are served, read from the
package's ``static`` folder by those exact names: nothing from the request reaches the
filesystem. Without the package, ``/docs`` falls back to the plain HTML list of endpoints.
"""

from __future__ import annotations

import html
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Final

__all__ = ["FILES", "asset", "available", "page"]

# The files the page needs, by their exact names in swagger-ui-py's static folder.
FILES: Final = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "LICENSE": "text/plain; charset=utf-8",
}


@cache
def _folder() -> Path | None:
    """swagger-ui-py's static folder, found without importing the package (it imports jinja2
    and every web framework adapter it ships)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if all((folder / name).is_file() for name in FILES) else None


def available() -> bool:
    """Whether the Swagger UI files are installed."""
    return _folder() is not None


@cache
def asset(name: str) -> tuple[bytes, str] | None:
    """A file's bytes and content type; None for a name not in ``FILES`` (or no package)."""
    folder = _folder()
    if name not in FILES or folder is None:
        return None
    return (folder / name).read_bytes(), FILES[name]


def page(title: str, fallback: str) -> str:
    """The Swagger UI page for ``/openapi.json``; ``fallback`` (the plain list of endpoints)
    is kept in the page for readers without JavaScript and for text tools."""
    options = {
        "url": "/openapi.json",
        "dom_id": "#swagger-ui",
        "deepLinking": True,
        "displayRequestDuration": True,
        "tryItOutEnabled": False,
        "validatorUrl": None,  # never send the document to the public validator
    }
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<link rel='stylesheet' href='/docs/static/swagger-ui.css'>"
        "<link rel='icon' type='image/png' href='/docs/static/favicon-32x32.png'>"
        "</head><body><div id='swagger-ui'></div>"
        "<script src='/docs/static/swagger-ui-bundle.js'></script>"
        f"<script>window.ui = SwaggerUIBundle({json.dumps(options)});</script>"
        f"<noscript>{fallback}</noscript>"
        "</body></html>"
    )
