"""Serving the console over plain HTTP: the shell, hashed assets, caching and headers."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
from html.parser import HTMLParser
from importlib import resources

import httpx
import pytest

from ktproxy.console.routes import CSP, hashed_name
from tests.console.conftest import ADMIN_KEY
from tests.harness import RunningGateway

STATIC = resources.files("ktproxy.console").joinpath("static")


class Shell(HTMLParser):
    """What the shell references and whether it carries anything inline."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline_scripts = 0
        self.style_attrs: list[str] = []
        self.handlers: list[str] = []
        self.inputs: list[dict[str, str | None]] = []
        self.forms: list[dict[str, str | None]] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name, _ in attrs:
            if name.startswith("on"):
                self.handlers.append(f"{tag} {name}")
            if name == "style":
                self.style_attrs.append(tag)
        if tag in ("script", "link", "img") and (a.get("src") or a.get("href")):
            self.refs.append(str(a.get("src") or a.get("href")))
        if tag == "style":
            self.inline_scripts += 1
        self._in_script = tag == "script"
        if tag == "input":
            self.inputs.append(a)
        if tag == "form":
            self.forms.append(a)

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


def parse_shell(text: str) -> Shell:
    shell = Shell()
    shell.feed(text)
    return shell


def check_security_headers(headers: httpx.Headers) -> None:
    assert headers["content-security-policy"] == CSP
    assert "script-src 'self';" in CSP and "frame-ancestors 'none'" in CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/console", "/console/"])
def test_the_shell_is_revalidated_and_locked_down(
    console_gateway: RunningGateway, path: str
) -> None:
    r = httpx.get(console_gateway.url + path)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    check_security_headers(r.headers)
    etag = r.headers["etag"]
    again = httpx.get(console_gateway.url + path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    check_security_headers(again.headers)
    stale = httpx.get(console_gateway.url + path, headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.content == r.content


def test_the_shell_has_no_inline_code_and_no_named_key_field(
    console_gateway: RunningGateway,
) -> None:
    shell = parse_shell(httpx.get(console_gateway.url + "/console").text)
    assert shell.inline_scripts == 0
    assert shell.style_attrs == [] and shell.handlers == []
    assert all(ref.startswith("/console/static/") for ref in shell.refs), shell.refs
    (password,) = [i for i in shell.inputs if i.get("type") == "password"]
    assert "name" not in password  # a form can never serialise the key into a URL
    (form,) = shell.forms
    assert form.get("method") == "post"
    assert "{{" not in httpx.get(console_gateway.url + "/console").text


def test_assets_are_content_hashed_typed_and_immutable(console_gateway: RunningGateway) -> None:
    shell = parse_shell(httpx.get(console_gateway.url + "/console").text)
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    seen = set()
    for ref in set(shell.refs):
        name = ref.rsplit("/", 1)[1]
        match = re.fullmatch(r"(?P<stem>[a-z]+)\.(?P<hash>[0-9a-f]{12})(?P<ext>\.[a-z]+)", name)
        assert match, name
        source = STATIC.joinpath(match["stem"] + match["ext"]).read_bytes()
        assert match["hash"] == hashlib.sha256(source).hexdigest()[:12]
        assert hashed_name(match["stem"] + match["ext"], source) == name
        r = httpx.get(console_gateway.url + ref)
        assert r.status_code == 200 and r.content == source
        assert r.headers["content-type"].split(";")[0] == types[match["ext"]]
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        check_security_headers(r.headers)
        cached = httpx.get(console_gateway.url + ref, headers={"If-None-Match": r.headers["etag"]})
        assert cached.status_code == 304
        seen.add(match["stem"] + match["ext"])
    assert {"console.js", "core.js", "events.js", "console.css", "favicon.svg"} <= seen


def raw_get(gw: RunningGateway, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET `path` sent byte for byte (no client-side normalisation of `..`)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path",
    [
        "/console/static/nope.0123456789ab.js",
        "/console/static/core.js",  # only hashed names are served
        "/console/static/index.html",
        "/console/static/../routes.py",
        "/console/static/..%2froutes.py",
        "/console/static/..%2F..%2Fapp.py",
        "/console/static/%2e%2e/%2e%2e/app.py",
        "/console/static/....//....//app.py",
        "/console/static/%2fetc%2fpasswd",
        "/console/../ktproxy/app.py",
    ],
)
def test_unknown_assets_and_traversal_get_json_404(
    console_gateway: RunningGateway, path: str
) -> None:
    status, headers, body = raw_get(console_gateway, path)
    assert status == 404, (path, body[:200])
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["message"] and error["type"] == "not_found_error"
    assert b"import" not in body and b"root:" not in body


def test_the_shell_needs_no_key_but_the_data_does(console_gateway: RunningGateway) -> None:
    assert httpx.get(console_gateway.url + "/console").status_code == 200
    denied = httpx.get(console_gateway.url + "/v1/kt/events?limit=1")
    assert denied.status_code == 401
    ok = httpx.get(
        console_gateway.url + "/v1/kt/events?limit=1", headers={"x-kt-admin-key": ADMIN_KEY}
    )
    assert ok.status_code == 200 and ok.json()["object"] == "list"


FORBIDDEN_JS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(")


def test_scripts_never_parse_data_as_html() -> None:
    """The XSS-safety rule of the console, checked on every shipped script."""
    scripts = [e for e in STATIC.iterdir() if e.name.endswith(".js")]
    assert len(scripts) >= 5
    for entry in scripts:
        text = entry.read_text("utf-8")
        for needle in FORBIDDEN_JS:
            assert needle not in text, f"{entry.name} uses {needle}"
        assert "new Function" not in text and 'setAttribute("style"' not in text
