"""Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`),
driven by the real `anthropic` package against a daemon with an API key:
whole and streamed answers, stop reasons, token counts, and errors as the
SDK's typed exceptions. The raw SSE stream is checked event by event too."""

import json
import urllib.request

import anthropic
import pytest
from conftest import running_daemon
from test_inference import GEMMA3_TEMPLATE, copy_model
from test_openai_http import free_port

KEY = "test-key-a7c3e1"
QUESTION = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, demo_model, router_bin):
    models = tmp_path_factory.mktemp("models")
    copy_model(demo_model, models / "chatty.gguf", extra={"tokenizer.chat_template": GEMMA3_TEMPLATE})
    tmp = tmp_path_factory.mktemp("daemon")
    port = free_port()
    with running_daemon(router_bin, models, tmp, "--http-port", str(port), env={"LLAMA_ROUTER_API_KEY": KEY}):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def client(daemon):
    return anthropic.Anthropic(base_url=daemon, api_key=KEY, max_retries=0, timeout=120)


# This SDK no longer sends sampling fields of its own: they go in the body.
GREEDY = {"temperature": 0}


def create(client, **kw):
    args = {"model": "chatty", "max_tokens": 12, "extra_body": GREEDY, "messages": QUESTION, **kw}
    return client.messages.create(**args)


def test_a_message_has_anthropics_shape(client):
    m = create(client, system="Answer briefly.")
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant"
    assert m.model == "chatty"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text.strip()
    assert m.stop_reason in ("end_turn", "max_tokens") and m.stop_sequence is None
    assert m.usage.input_tokens > 5 and 0 < m.usage.output_tokens <= 12


def test_max_tokens_is_the_stop_reason_when_reached(client):
    m = create(client, max_tokens=2)
    assert (m.stop_reason, m.usage.output_tokens) == ("max_tokens", 2)


def test_a_stop_sequence_ends_the_answer_and_is_named(client):
    full = create(client).content[0].text
    word = full.strip().split()[1] if len(full.split()) > 1 else full.strip()[1:3]
    m = create(client, stop_sequences=[word])
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", word)
    assert m.content[0].text == full[: full.index(word)]


def test_a_streamed_message_is_the_same_answer(client):
    whole = create(client, system=[{"type": "text", "text": "Answer briefly."}])
    with client.messages.stream(
        model="chatty", max_tokens=12, extra_body=GREEDY, system="Answer briefly.", messages=QUESTION
    ) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(deltas) > 1
    assert "".join(deltas) == final.content[0].text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        whole.usage.input_tokens,
        whole.usage.output_tokens,
    )


def test_the_raw_stream_is_anthropics_event_sequence(daemon):
    body = {"model": "chatty", "max_tokens": 4, "temperature": 0, "stream": True, "messages": QUESTION}
    request = urllib.request.Request(
        daemon + "/v1/messages",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-api-key": KEY, "anthropic-version": "2023-06-01"},
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line.decode().rstrip("\n") for line in r]
    events = []
    for line in lines:
        if line.startswith("event: "):
            events.append([line[7:], None])
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            assert events and events[-1][1] is None, lines
            assert data["type"] == events[-1][0]
            events[-1][1] = data
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"], names
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"], names
    assert set(names[3:-3]) == {"content_block_delta"}, names
    for _, data in events[3:-3]:
        assert data["index"] == 0 and data["delta"]["type"] == "text_delta"
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 4


def test_count_tokens_is_the_prompt_a_message_is_generated_from(client):
    system = "Answer briefly."
    counted = client.messages.count_tokens(model="chatty", system=system, messages=QUESTION)
    assert counted.input_tokens == create(client, system=system, max_tokens=1).usage.input_tokens
    longer = client.messages.count_tokens(
        model="chatty", messages=[*QUESTION, {"role": "assistant", "content": "Red."}, *QUESTION]
    )
    assert longer.input_tokens > counted.input_tokens


def test_a_last_assistant_turn_is_a_prefill_the_answer_continues(client):
    prefill = "The first colour is"
    with_prefill = [*QUESTION, {"role": "assistant", "content": prefill}]
    counted = client.messages.count_tokens(model="chatty", messages=with_prefill).input_tokens
    plain = client.messages.count_tokens(model="chatty", messages=QUESTION).input_tokens
    # The prefill's 4 tokens follow the prompt, with no end of turn and no
    # second answer start after them (those would be 5 more).
    assert plain < counted <= plain + 5, (plain, counted)
    m = create(client, messages=with_prefill, max_tokens=6)
    assert m.usage.input_tokens == counted
    # The answer is the continuation only, as Anthropic's API returns it.
    assert m.content[0].text and not m.content[0].text.startswith(prefill)


def test_errors_are_the_sdks_exceptions(client, daemon):
    with pytest.raises(anthropic.NotFoundError) as e:
        create(client, model="nope")
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", messages=QUESTION)
    with pytest.raises(anthropic.BadRequestError) as e:
        # Client tools work (test_tools.py); server tools are refused, by name.
        create(client, tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "tools[0].type" in e.value.message
    with pytest.raises(anthropic.BadRequestError) as e:
        create(client, messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "x"}}]}])
    assert "messages[0].content[0].type" in e.value.message
    wrong = anthropic.Anthropic(base_url=daemon, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        create(wrong)
    assert e.value.body["error"]["type"] == "authentication_error"


def test_the_key_may_come_as_a_bearer_token(daemon):
    bearer = anthropic.Anthropic(base_url=daemon, auth_token=KEY, max_retries=0, timeout=120)
    assert create(bearer, max_tokens=1).usage.output_tokens == 1
