"""Tool calling through the real `openai` and `anthropic` clients, on the demo
model: its Gemma template knows no tools (the generic way: tools in a system
prompt, a JSON answer enforced while sampling), and a copy of it with a
Qwen/Hermes-style template that renders tools itself (the native way)."""

import json

import anthropic
import jsonschema
import openai
import pytest
from test_inference import copy_model
from test_llama_server import call, llama_server, started  # noqa: F401 (fixtures)

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 16}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time in a time zone", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}

# Qwen 2.5's way with tools, trimmed: the tools in the system turn, calls as
# <tool_call> blocks, results as <tool_response> in a user turn.
HERMES = (
    "{%- if tools %}<|im_start|>system\nYou may call functions. <tools>\n"
    "{%- for t in tools %}{{ t | tojson }}\n{% endfor %}</tools>\n"
    "Answer a call as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\n{% endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{%- elif m.tool_calls %}<|im_start|>assistant\n{% for c in m.tool_calls %}<tool_call>\n{{ c.function | tojson }}\n</tool_call>{% endfor %}<|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

PROMPTS = [
    "What is the weather in Oslo?",
    "Is it raining in Lima right now?",
    "Tell me the temperature in Cairo in fahrenheit.",
    "How cold is it in Helsinki?",
    "Weather report for Nairobi, please.",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory, demo_model):
    d = tmp_path_factory.mktemp("models")
    (d / "base.gguf").hardlink_to(demo_model)
    copy_model(demo_model, d / "hermes.gguf", drop={"tokenizer.chat_template"}, extra={"tokenizer.chat_template": HERMES})
    return d


@pytest.fixture(scope="module")
def server(llama_server, models, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("daemon")
    with started(llama_server, tmp, "--models-dir", str(models), "--models-max", "2", "-c", "2048") as (base, log):
        yield base, log


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="none", max_retries=0, timeout=120)


def check_call(call):
    assert call.type == "function" and call.id.startswith("call_"), call
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, SCHEMAS[call.function.name])
    return arguments


@pytest.mark.parametrize("model", ["base", "hermes"])
def test_tool_choice_required_always_returns_a_valid_call(client, model):
    for seed, prompt in enumerate(PROMPTS):
        answer = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            tools=TOOLS,
            tool_choice="required",
            max_tokens=200,
            temperature=0.8,
            seed=seed,
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert choice.message.content is None, choice.message
        (call,) = choice.message.tool_calls
        check_call(call)
    # A named function is the one called.
    answer = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What time is it in Tokyo?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=200,
    )
    (call,) = answer.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    check_call(call)


def test_a_streamed_call_comes_as_tool_call_deltas(client):
    chunks = list(
        client.chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": PROMPTS[0]}],
            tools=TOOLS,
            tool_choice="required",
            max_tokens=200,
            stream=True,
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [d.tool_calls for d in deltas if d.tool_calls]
    assert len(calls) == 1, deltas
    (call,) = calls[0]
    assert call.index == 0 and call.id.startswith("call_") and call.function.name in SCHEMAS
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    # The call's JSON never leaks into the text.
    assert "".join(d.content or "" for d in deltas) == ""
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_tool_result_goes_back_through_the_template_and_the_second_turn_answers(server, client):
    question = {"role": "user", "content": PROMPTS[0]}
    first = client.chat.completions.create(
        model="base", messages=[question], tools=TOOLS, tool_choice="required", max_tokens=200
    )
    call = first.choices[0].message.tool_calls[0]
    history = [
        question,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "-3 C and snowing"},
    ]
    status, rendered = call_template(server[0], "base", history)
    assert status == 200, rendered
    prompt = rendered["prompt"]
    assert "-3 C and snowing" in prompt and call.function.name in prompt, prompt
    assert "get_time" in prompt, "the offered tools are in the prompt"
    second = client.chat.completions.create(
        model="base", messages=[*history], tools=TOOLS, tool_choice="auto", max_tokens=160, seed=1
    )
    choice = second.choices[0]
    if choice.finish_reason == "tool_calls":
        for c in choice.message.tool_calls:
            check_call(c)
    elif choice.finish_reason == "stop":
        # The generic style's {"response": ...}, unwrapped.
        assert choice.message.content and "tool_call" not in choice.message.content, choice
    else:
        # Cut short: what the model wrote is all there, as text.
        assert choice.finish_reason == "length" and choice.message.content, choice
    # With tool_choice none the model just answers, in text.
    plain = client.chat.completions.create(model="base", messages=history, tools=TOOLS, tool_choice="none", max_tokens=16)
    assert plain.choices[0].finish_reason in ("stop", "length") and not plain.choices[0].message.tool_calls


def call_template(base, model, messages):
    return call(base + "/apply-template", {"model": model, "messages": messages, "tools": TOOLS})


def test_bad_tools_are_refused_by_name(client):
    with pytest.raises(openai.BadRequestError, match="nope"):
        client.chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": "x"}],
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    bad = [{"type": "function", "function": {"name": "get weather", "parameters": WEATHER}}]
    with pytest.raises(openai.BadRequestError, match="get weather"):
        client.chat.completions.create(model="base", messages=[{"role": "user", "content": "x"}], tools=bad)
    with pytest.raises(openai.BadRequestError, match="not both"):
        client.chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": "x"}],
            tools=TOOLS,
            tool_choice="required",
            response_format={"type": "json_object"},
        )


ANTHROPIC_TOOLS = [{"name": t["function"]["name"], "description": t["function"]["description"], "input_schema": t["function"]["parameters"]} for t in TOOLS]


def test_anthropic_tool_use_blocks_whole_streamed_and_answered(server):
    client = anthropic.Anthropic(base_url=server[0], api_key="none", max_retries=0, timeout=120)
    question = {"role": "user", "content": PROMPTS[1]}
    message = client.messages.create(
        model="base", max_tokens=200, messages=[question], tools=ANTHROPIC_TOOLS, tool_choice={"type": "any"}
    )
    assert message.stop_reason == "tool_use", message
    (use,) = [b for b in message.content if b.type == "tool_use"]
    jsonschema.validate(use.input, SCHEMAS[use.name])
    with client.messages.stream(
        model="base", max_tokens=200, messages=[question], tools=ANTHROPIC_TOOLS, tool_choice={"type": "tool", "name": "get_weather"}
    ) as stream:
        final = stream.get_final_message()
    (streamed,) = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and streamed.name == "get_weather"
    jsonschema.validate(streamed.input, WEATHER)
    # The result goes back as a tool_result block; the next turn answers in text.
    history = [
        question,
        {"role": "assistant", "content": [b.model_dump() for b in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "It is 31 C and humid."}]},
    ]
    counted = client.messages.count_tokens(model="base", messages=history, tools=ANTHROPIC_TOOLS)
    assert counted.input_tokens > 20
    answer = client.messages.create(
        model="base", max_tokens=24, messages=history, tools=ANTHROPIC_TOOLS, tool_choice={"type": "none"}
    )
    assert answer.stop_reason in ("end_turn", "max_tokens") and [b.type for b in answer.content] == ["text"], answer
