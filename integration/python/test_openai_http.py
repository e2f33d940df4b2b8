"""The OpenAI-compatible HTTP API, driven by the real `openai` package, and
/metrics parsed by `prometheus_client`'s OpenMetrics parser. One daemon with
an API key, one request slot per model and no request queue, so that a
second concurrent request is refused with 429."""

import math
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import grpc
import openai
import pytest
from conftest import Dynamic, running_daemon
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from test_inference import GEMMA3_TEMPLATE, PROMPT, copy_model

KEY = "test-key-6d1f0c"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory, demo_model):
    d = tmp_path_factory.mktemp("models")
    (d / "base.gguf").hardlink_to(demo_model)
    copy_model(demo_model, d / "chatty.gguf", extra={"tokenizer.chat_template": GEMMA3_TEMPLATE})
    return d


@pytest.fixture(scope="module")
def daemon(models, router_bin, tmp_path_factory):
    """(base URL, gRPC channel, log path) of a daemon requiring KEY, given through the environment."""
    tmp = tmp_path_factory.mktemp("daemon")
    port = free_port()
    flags = ["--http-port", str(port), "--parallel", "1", "--request-queue", "0"]
    with running_daemon(router_bin, models, tmp, *flags, env={"LLAMA_ROUTER_API_KEY": KEY}) as channel:
        yield f"http://127.0.0.1:{port}", channel, tmp / "daemon.log"


@pytest.fixture
def client(daemon):
    return openai.OpenAI(base_url=daemon[0] + "/v1", api_key=KEY, max_retries=0, timeout=120)


def get(url, key=None):
    """(status, body text) of a GET."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def grpc_api(daemon, service="llama_router.v1.InferenceService"):
    return Dynamic(daemon[1], service, metadata=[("authorization", f"Bearer {KEY}")])


def test_models_are_listed_with_their_state(client):
    ids = {m.id for m in client.models.list()}
    assert {"base", "chatty"} <= ids
    chatty = client.models.retrieve("chatty")
    assert chatty.owned_by == "llama-router"
    assert chatty.model_extra["architecture"] == "gemma3"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_a_completion_is_the_same_text_as_grpc_generate(client, daemon):
    answer = client.completions.create(model="base", prompt=PROMPT, max_tokens=12, temperature=0)
    choice = answer.choices[0]
    assert choice.finish_reason == "length"
    assert answer.usage.completion_tokens == 12
    pieces = grpc_api(daemon).stream(
        "Generate", model="base", prompt=PROMPT, max_tokens=12, sampling={"temperature": 0.0}
    )
    assert choice.text == "".join(p.text for p in pieces)
    assert answer.usage.prompt_tokens == pieces[-1].usage.prompt_tokens


def test_a_chat_completion_whole_and_streamed(client, daemon):
    # The demo model is a base model: what it says is not the point, that
    # HTTP and gRPC say the same is.
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    whole = client.chat.completions.create(model="chatty", messages=messages, max_tokens=16, temperature=0)
    text = whole.choices[0].message.content
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.role == "assistant"
    pieces = grpc_api(daemon).stream("Chat", model="chatty", messages=messages, max_tokens=16, sampling={"temperature": 0.0})
    assert text and text == "".join(p.text for p in pieces)
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks = list(
        client.chat.completions.create(
            model="chatty",
            messages=messages,
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_a_repeated_prompt_is_evaluated_once_and_answers_the_same(client):
    # One slot (--parallel 1): it holds what the last request left.
    messages = [{"role": "user", "content": "Name three colours of the rainbow."}]
    ask = dict(model="chatty", max_tokens=8, temperature=0)
    first = client.chat.completions.create(messages=messages, extra_body={"cache_prompt": False}, **ask)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    again = client.chat.completions.create(messages=messages, **ask)
    # All but the last prompt token: its logits start the answer.
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
    # (Not compared token for token with `first`: a one-token step and a
    # whole-prompt batch may round differently, and flip a near tie.)
    assert again.choices[0].message.content
    # A turn more: the conversation so far is not evaluated again.
    answer = first.choices[0].message.content
    longer = messages + [{"role": "assistant", "content": answer}, {"role": "user", "content": "One more?"}]
    follow = client.chat.completions.create(messages=longer, **ask)
    assert follow.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens
    unasked = client.chat.completions.create(messages=longer, extra_body={"cache_prompt": False}, **ask)
    assert unasked.usage.prompt_tokens_details.cached_tokens == 0


def test_logprobs_on_chat_and_completions(client):
    messages = [{"role": "user", "content": "Name a colour."}]
    whole = client.chat.completions.create(
        model="chatty", messages=messages, max_tokens=8, temperature=0, logprobs=True, top_logprobs=4
    )
    choice = whole.choices[0]
    content = choice.logprobs.content
    assert len(content) == whole.usage.completion_tokens - (choice.finish_reason == "stop")
    assert "".join(bytes(t.bytes).decode(errors="replace") for t in content) == choice.message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 4
        # Greedy: the token taken is the most likely one.
        assert t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert sum(math.exp(a.logprob) for a in t.top_logprobs) <= 1.0 + 1e-4
    chunks = list(
        client.chat.completions.create(
            model="chatty", messages=messages, max_tokens=8, temperature=0, logprobs=True, top_logprobs=4, stream=True
        )
    )
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in content]
    # Without logprobs there are none.
    plain = client.chat.completions.create(model="chatty", messages=messages, max_tokens=4, temperature=0)
    assert plain.choices[0].logprobs is None
    text = client.completions.create(model="base", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2)
    lp = text.choices[0].logprobs
    assert len(lp.tokens) == 6 and "".join(lp.tokens) == text.choices[0].text
    assert lp.text_offset[0] == 0 and all(len(top) == 2 for top in lp.top_logprobs)
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model="chatty", messages=messages, max_tokens=4, logprobs=True, top_logprobs=21)


def test_errors_have_openai_shapes_and_statuses(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404
    assert "nope" in e.value.body["message"]
    # A model without a chat template chats in ChatML (llama-server's fallback).
    answer = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert answer.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError, match="n = 2"):
        client.completions.create(model="base", prompt="x", n=2)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="base", prompt="x", temperature=-1)


def test_embeddings_come_back_as_unit_vectors(client):
    # The openai package asks for base64 and decodes it.
    reply = client.embeddings.create(model="base", input=["cat", "kitten", "tax law"])
    vectors = [d.embedding for d in reply.data]
    assert [d.index for d in reply.data] == [0, 1, 2]
    assert all(len(v) == 640 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in vectors)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2])
    floats = client.embeddings.create(model="base", input="cat", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)


def long_stream(client):
    return client.completions.create(model="base", prompt="Once upon a time", max_tokens=4000, temperature=1, stream=True)


def active_requests(daemon, model="base"):
    status, text = get(daemon[0] + "/metrics", KEY)
    assert status == 200
    for family in text_string_to_metric_families(text):
        if family.name == "llama_router_requests_active":
            return sum(s.value for s in family.samples if s.labels.get("model") == model)
    return 0


def test_a_full_model_answers_429_and_a_client_that_leaves_frees_its_slot(client, daemon):
    stream = long_stream(client)
    next(iter(stream))
    with pytest.raises(openai.RateLimitError) as e:
        client.completions.create(model="base", prompt="x", max_tokens=2)
    assert e.value.status_code == 429
    stream.close()  # the client disconnects mid-generation
    deadline = time.time() + 10
    while active_requests(daemon) and time.time() < deadline:
        time.sleep(0.05)
    assert active_requests(daemon) == 0
    # The worker frees the slot at its next decode step.
    deadline = time.time() + 10
    while True:
        try:
            assert client.completions.create(model="base", prompt="x", max_tokens=2).usage.completion_tokens == 2
            break
        except openai.RateLimitError:
            assert time.time() < deadline, "the slot was never freed"
            time.sleep(0.05)


def test_a_crashed_worker_is_a_503_and_the_next_request_works(client, daemon):
    client.completions.create(model="base", prompt="x", max_tokens=1)
    pid = client.models.retrieve("base").model_extra["worker_pid"]
    assert pid
    failure = {}

    def wait_for_answer():
        try:
            client.completions.create(model="base", prompt="Once upon a time", max_tokens=4000, temperature=1)
        except openai.APIStatusError as e:
            failure["error"] = e

    waiter = threading.Thread(target=wait_for_answer)
    waiter.start()
    deadline = time.time() + 10
    while not active_requests(daemon) and time.time() < deadline:
        time.sleep(0.02)
    os.kill(pid, signal.SIGSEGV)
    waiter.join(timeout=30)
    error = failure["error"]
    assert error.status_code == 503
    assert "SIGSEGV" in error.body["message"]
    assert client.completions.create(model="base", prompt="x", max_tokens=2).usage.completion_tokens == 2


def test_metrics_parse_and_count_what_happened(client, daemon):
    client.completions.create(model="base", prompt=PROMPT, max_tokens=4, temperature=0)
    status, text = get(daemon[0] + "/metrics", KEY)
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(name, sample=None, **labels):
        return sum(
            s.value
            for s in families[name].samples
            if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert value("llama_router_models", state="ready") >= 1
    assert value("llama_router_model_loads", "llama_router_model_loads_total", model="base") >= 1
    assert value("llama_router_worker_crashes", "llama_router_worker_crashes_total", model="base") >= 1
    assert value("llama_router_generated_tokens", "llama_router_generated_tokens_total", model="base") >= 4
    ttft = "llama_router_time_to_first_token_seconds"
    assert value(ttft, ttft + "_count", model="base") >= 1
    load = "llama_router_model_load_duration_seconds"
    assert value(load, load + "_count", model="base") >= 1
    assert value("llama_router_host_cache_bytes") > 0
    assert value("llama_router_requests_queued") == 0


def test_the_key_is_required_except_for_health_and_never_logged(daemon):
    base, _, log = daemon
    status, body = get(base + "/v1/models")
    assert status == 401 and "invalid_api_key" in body
    assert get(base + "/v1/models", "wrong")[0] == 401
    assert get(base + "/metrics")[0] == 401
    assert get(base + "/health")[0] == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
    models = Dynamic(daemon[1], "llama_router.v1.ModelService")
    with pytest.raises(grpc.RpcError) as e:
        models.unary("ListModels")
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_api(daemon, "llama_router.v1.ModelService").unary("ListModels").models
    assert KEY not in log.read_text()


def test_without_a_key_everything_is_open(models, router_bin, tmp_path):
    port = free_port()
    with running_daemon(router_bin, models, tmp_path, "--http-port", str(port)):
        status, body = get(f"http://127.0.0.1:{port}/v1/models")
        assert status == 200 and '"chatty"' in body
        assert get(f"http://127.0.0.1:{port}/health")[0] == 200
