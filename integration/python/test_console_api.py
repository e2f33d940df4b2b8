"""The console's endpoints over plain HTTP against the real daemon: the API
key on every one of them, what keeps other sites' pages off them (Host,
Origin, Sec-Fetch-Site, JSON only), the bound on `/events` watchers,
llama-server's `/models` shape, and errors in OpenAI's shape for hostile
query strings and wrong methods."""

import http.client
import json
import time
import urllib.error
import urllib.request

import pytest
from conftest import running_daemon
from test_openai_http import free_port

KEY = "console-api-key-77c1"
MODEL = "gemma"
MAX_WATCHERS = 32


@pytest.fixture(scope="module")
def models(tmp_path_factory, demo_model):
    d = tmp_path_factory.mktemp("console-api-models")
    (d / f"{MODEL}.gguf").hardlink_to(demo_model)
    return d


def serve(router_bin, models, tmp, env=None):
    port = free_port()
    return port, running_daemon(router_bin, models, tmp, "--http-port", str(port), env=env)


@pytest.fixture(scope="module")
def open_daemon(models, router_bin, tmp_path_factory):
    """The base URL of a daemon with no API key."""
    port, running = serve(router_bin, models, tmp_path_factory.mktemp("console-api-open"))
    with running:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def keyed_daemon(models, router_bin, tmp_path_factory):
    """The base URL of a daemon with an API key."""
    port, running = serve(
        router_bin, models, tmp_path_factory.mktemp("console-api-key"), env={"LLAMA_ROUTER_API_KEY": KEY}
    )
    with running:
        yield f"http://127.0.0.1:{port}"


def call(base, method, path, body=None, headers=None):
    """(status, headers, body: parsed JSON if it is JSON, else text) of an HTTP call."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            status, head, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, head, raw = e.code, e.headers, e.read()
    try:
        return status, head, json.loads(raw or b"null")
    except ValueError:
        return status, head, raw.decode(errors="replace")


JSON = {"Content-Type": "application/json"}


def assert_openai_error(body, code):
    assert isinstance(body, dict) and "error" in body, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body
    assert set(body["error"]) >= {"message", "type", "param", "code"}, body


# ---- the API key ----

GUARDED = [
    ("GET", "/events", None),
    ("GET", "/status", None),
    ("GET", "/models", None),
    ("POST", "/models/load", {"model": MODEL}),
    ("POST", "/models/unload", {"model": MODEL}),
    ("POST", "/models/pin", {"model": MODEL, "pinned": False}),
    ("POST", "/models/reload", {}),
    ("GET", f"/models/{MODEL}/logs", None),
    ("GET", f"/models/{MODEL}/timings", None),
    ("GET", "/crashes", None),
    ("GET", "/crashes/20260101T000000Z-1", None),
]


@pytest.mark.parametrize("method,path,body", GUARDED, ids=[f"{m} {p}" for m, p, _ in GUARDED])
def test_every_console_endpoint_needs_the_key(keyed_daemon, method, path, body):
    status, _, answer = call(keyed_daemon, method, path, body, headers=JSON)
    assert status == 401, answer
    assert_openai_error(answer, "invalid_api_key")
    status, _, answer = call(
        keyed_daemon, method, path, body, headers={**JSON, "Authorization": "Bearer wrong"}
    )
    assert status == 401, answer


@pytest.mark.parametrize("path", ["/health", "/", "/console/app.js", "/console/playground.js", "/console/app.css"])
def test_the_shell_and_health_stay_open(keyed_daemon, path):
    status, _, _ = call(keyed_daemon, "GET", path)
    assert status == 200


def test_with_the_key_the_endpoints_answer(keyed_daemon):
    auth = {**JSON, "Authorization": f"Bearer {KEY}"}
    for method, path, body in [("GET", "/status", None), ("GET", "/models", None), ("GET", f"/models/{MODEL}/logs", None)]:
        status, _, answer = call(keyed_daemon, method, path, body, headers=auth)
        assert status == 200, (path, answer)


# ---- other sites' pages ----

def test_a_plain_json_post_works(open_daemon):
    status, _, answer = call(open_daemon, "POST", "/models/pin", {"model": MODEL, "pinned": False}, headers=JSON)
    assert status == 200, answer
    assert answer["success"] is True
    # What the console itself sends: same origin, by both headers.
    same = {**JSON, "Origin": open_daemon, "Sec-Fetch-Site": "same-origin"}
    status, _, answer = call(open_daemon, "POST", "/models/pin", {"model": MODEL, "pinned": False}, headers=same)
    assert status == 200, answer


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_an_action_that_is_not_json_is_refused(open_daemon, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"model": MODEL}).encode()
    for path in ("/models/load", "/models/unload", "/models/pin"):
        status, _, answer = call(open_daemon, "POST", path, body, headers=headers)
        assert status == 415, (path, answer)
        assert_openai_error(answer, "unsupported_media_type")


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:1"},
    ],
    ids=["origin", "null-origin", "sec-fetch-cross-site", "sec-fetch-same-site"],
)
def test_a_cross_site_browser_request_is_refused(open_daemon, headers):
    for path, body in [("/models/load", {"model": MODEL}), ("/models/unload", {"model": MODEL}), ("/models/reload", {})]:
        status, _, answer = call(open_daemon, "POST", path, body, headers={**JSON, **headers})
        assert status == 403, (path, answer)
        assert_openai_error(answer, "cross_site_request")
    status, _, answer = call(open_daemon, "GET", "/models?reload=1", headers=headers)
    assert status == 403, answer
    # Reading stays possible (a browser keeps the answer from the other site anyway).
    assert call(open_daemon, "GET", "/models", headers=headers)[0] == 200


def test_a_rebound_host_name_is_refused_without_a_key(open_daemon, keyed_daemon):
    evil = {"Host": "evil.example:8080"}
    for method, path, body in [("GET", "/models", None), ("GET", "/v1/models", None), ("POST", "/models/load", {"model": MODEL})]:
        status, _, answer = call(open_daemon, method, path, body, headers={**JSON, **evil})
        assert status == 403, (path, answer)
        assert_openai_error(answer, "forbidden_host")
    port = open_daemon.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert call(open_daemon, "GET", "/models", headers={"Host": host})[0] == 200, host
    # With a key, a rebinding page has no key: the name is not checked.
    auth = {"Authorization": f"Bearer {KEY}", **evil}
    assert call(keyed_daemon, "GET", "/models", headers=auth)[0] == 200


def test_models_reload_is_a_post_too(open_daemon):
    status, _, answer = call(open_daemon, "POST", "/models/reload", headers=JSON)
    assert status == 200, answer
    assert MODEL in [m["id"] for m in answer["data"]]
    status, _, answer = call(open_daemon, "GET", "/models?reload=1")
    assert status == 200, answer


# ---- llama-server's shape ----

def test_models_has_llama_servers_shape(open_daemon):
    status, _, answer = call(open_daemon, "GET", "/models")
    assert status == 200, answer
    assert answer["object"] == "list"
    m = next(m for m in answer["data"] if m["id"] == MODEL)
    assert m["object"] == "model"
    assert m["architecture"] == {"input_modalities": ["text"], "output_modalities": ["text"]}
    assert m["gguf_architecture"] == "gemma3"
    assert m["status"]["value"] in ("loaded", "loading", "unloaded")


# ---- hostile query strings, wrong methods ----

@pytest.mark.parametrize("query", ["lines=abc", "lines=-1", "lines=1e9", "lines=99999999999999999999999"])
def test_a_bad_query_is_a_400_in_openai_shape(open_daemon, query):
    status, head, answer = call(open_daemon, "GET", f"/models/{MODEL}/logs?{query}")
    assert status == 400, answer
    assert head.get_content_type() == "application/json"
    assert_openai_error(answer, "invalid_request")


def test_a_wrong_method_is_a_405_in_openai_shape(open_daemon):
    for method, path in [("GET", "/models/load"), ("DELETE", "/models"), ("PUT", "/v1/chat/completions")]:
        status, _, answer = call(open_daemon, method, path, headers=JSON)
        assert status == 405, (method, path, answer)
        assert_openai_error(answer, "method_not_allowed")


# ---- the bound on /events ----

def open_events(base):
    """An open /events stream: (connection, response)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/events", headers={"Accept": "text/event-stream"})
    return conn, conn.getresponse()


def test_one_watcher_past_the_bound_is_refused_and_a_closed_one_frees_its_place(open_daemon):
    watchers = []
    try:
        for _ in range(MAX_WATCHERS):
            conn, r = open_events(open_daemon)
            watchers.append(conn)
            assert r.status == 200
            assert r.readline().startswith(b"event: snapshot"), "every watcher starts with a snapshot"
        conn, r = open_events(open_daemon)
        assert r.status == 503
        assert r.getheader("Retry-After") == "2"
        assert_openai_error(json.loads(r.read()), "overloaded")
        conn.close()
        watchers.pop().close()
        deadline = time.time() + 15
        while True:
            conn, r = open_events(open_daemon)
            if r.status == 200:
                watchers.append(conn)
                break
            conn.close()
            assert time.time() < deadline, "a closed watcher never freed its place"
            time.sleep(0.5)
    finally:
        for conn in watchers:
            conn.close()
