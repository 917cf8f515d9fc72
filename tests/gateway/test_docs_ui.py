"""``/docs`` is an interactive Swagger UI page over a valid, complete OpenAPI document.

The document is checked with ``openapi-spec-validator`` (an independent implementation of the
OpenAPI 3.1 rules). The page is loaded in real headless Chromium: every operation of the
document must render, nothing may be fetched from another host, and the browser console must
stay free of errors. The page's files come from ``/docs/static/``, a fixed list of names.
"""

from __future__ import annotations

import shutil
from typing import Any
from urllib.parse import urlsplit

import pytest
from openapi_spec_validator import validate

from conveyor.gateway import swagger
from tests.gateway.servers import Running, gateway_project, running


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    config = gateway_project(tmp_path_factory.mktemp("docs") / "p")
    with running(config) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def document(gw: Running) -> dict[str, Any]:
    return gw.get("/openapi.json").json()


def test_the_document_passes_openapi_spec_validator(document: dict[str, Any]) -> None:
    validate(document)
    broken = {**document, "paths": {"/x": {"get": {"responses": {"200": {}}}}}}
    with pytest.raises(Exception, match="description"):
        validate(broken)  # the validator is not a no-op


def test_the_document_lists_the_protocol_routes(document: dict[str, Any]) -> None:
    paths = document["paths"]
    for path in (
        "/invocations",
        "/ping",
        "/health",
        "/v1/models/num:predict",
        "/docs/static/{file}",
    ):
        assert path in paths, path
    assert "/v1/models/mixed/versions/{version}:predict" in paths
    errors = paths["/v1/models/num:predict"]["post"]["responses"]["400"]["content"]
    assert errors["application/json"]["schema"] == {"$ref": "#/components/schemas/TfError"}
    v2 = paths["/v2/models/num/infer"]["post"]["responses"]["400"]["content"]
    assert v2["application/json"]["schema"] == {"$ref": "#/components/schemas/V2Error"}
    assert document["components"]["schemas"]["V2Error"]["properties"]["error"] == {"type": "string"}


def test_static_files_are_a_fixed_list(gw: Running) -> None:
    assert swagger.available()
    for name, media in swagger.FILES.items():
        r = gw.get(f"/docs/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == media
        assert r.content == swagger.asset(name)[0]  # type: ignore[index]
    for path in (
        "/docs/static/index.css",  # in the package, not in the list
        "/docs/static/..%2F__init__.py",
        "/docs/static/../core.py",
        "/docs/static/%2e%2e%2fcore.py",
    ):
        r = gw.get(path)
        assert r.status_code == 404, path
    r = gw.get("/docs/static/nope.js")
    assert "swagger-ui-bundle.js" in r.json()["error"]["message"]


def test_docs_renders_every_operation_in_chromium_without_console_errors(
    gw: Running, document: dict[str, Any]
) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    operations = sum(len(ops) for ops in document["paths"].values())
    errors: list[str] = []
    hosts: set[str] = set()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda req: hosts.add(urlsplit(req.url).netloc))
            page.goto(gw.url + "/docs", wait_until="networkidle")
            page.wait_for_selector(".opblock", timeout=20_000)
            rendered = page.locator(".opblock").count()
            title = page.locator(".info .title").inner_text()
            page.locator(".opblock-summary").first.click()  # one operation opens
            page.wait_for_selector(".opblock.is-open", timeout=10_000)
        finally:
            browser.close()
    assert rendered == operations
    assert "Conveyor gateway" in title
    assert hosts == {urlsplit(gw.url).netloc}  # nothing from a CDN
    assert not errors, errors
