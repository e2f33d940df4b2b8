"""OpenAI's Responses API (`/v1/responses`) for text, driven by the real
`openai` package: a string or messages as input, instructions, the output
limit (status `incomplete`), and the event stream both as the SDK's
`responses.stream` helper and as raw `stream=True` events."""

import openai
import pytest
from conftest import running_daemon
from test_inference import GEMMA3_TEMPLATE, copy_model
from test_openai_http import free_port

SHORT = "Is the sky blue? Answer with one word."
# The demo model rarely ends an answer itself: a stop string (our extension,
# as on chat completions) ends it, and the response is completed.
LINE = {"stop": ["\n"]}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, demo_model, router_bin):
    models = tmp_path_factory.mktemp("models")
    copy_model(demo_model, models / "chatty.gguf", extra={"tokenizer.chat_template": GEMMA3_TEMPLATE})
    tmp = tmp_path_factory.mktemp("daemon")
    port = free_port()
    with running_daemon(router_bin, models, tmp, "--http-port", str(port)):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def client(daemon):
    return openai.OpenAI(base_url=daemon + "/v1", api_key="none", max_retries=0, timeout=120)


def test_a_response_has_openais_shape(client):
    r = client.responses.create(
        model="chatty", input=SHORT, instructions="Be brief.", max_output_tokens=64, temperature=0, extra_body=LINE
    )
    assert r.id.startswith("resp_") and r.object == "response" and r.model == "chatty"
    assert r.status == "completed" and r.incomplete_details is None
    [item] = r.output
    assert (item.type, item.role, item.status) == ("message", "assistant", "completed")
    assert [c.type for c in item.content] == ["output_text"]
    assert r.output_text == item.content[0].text and r.output_text.strip()
    u = r.usage
    assert u.input_tokens > 5 and u.output_tokens > 0 and u.total_tokens == u.input_tokens + u.output_tokens


def test_the_output_limit_makes_it_incomplete(client):
    messages = [{"role": "developer", "content": "Be verbose."}, {"role": "user", "content": [{"type": "input_text", "text": "Tell me a story."}]}]
    r = client.responses.create(model="chatty", input=messages, max_output_tokens=3, temperature=0)
    assert (r.status, r.incomplete_details.reason, r.usage.output_tokens) == ("incomplete", "max_output_tokens", 3)


def test_the_stream_helper_gives_deltas_and_the_completed_response(client):
    args = {"model": "chatty", "input": SHORT, "max_output_tokens": 64, "temperature": 0, "extra_body": LINE}
    whole = client.responses.create(**args)
    with client.responses.stream(**args) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed", types
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    [done] = [e for e in events if e.type == "response.output_text.done"]
    assert "".join(deltas) == done.text == final.output_text == whole.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_raw_events_end_incomplete_at_the_limit(client):
    events = list(client.responses.create(model="chatty", input="Tell me a story.", max_output_tokens=4, stream=True))
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ], types
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ], types
    assert events[-1].response.usage.output_tokens == 4
    assert events[-1].response.output[0].content[0].text == events[-4].text


def test_what_we_cannot_honour_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        client.responses.create(model="chatty", input="x", previous_response_id="resp_1")
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.responses.create(model="chatty", input="x", tools=[{"type": "function", "name": "f", "parameters": {}}])
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope", input="x")
