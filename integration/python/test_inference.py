"""Inference on copies of the demo model written with the `gguf` package:
a 3-shard split set must answer exactly like the single file, and a copy
given a chat template must chat. The client knows the API by reflection only."""

import math

import pytest
from conftest import Dynamic, running_daemon
from gguf import GGUFReader, GGUFValueType, GGUFWriter

SERVICE = "llama_router.v1.InferenceService"
PROMPT = "The capital of France is"

# Gemma 3's chat template, as published with the model.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}{%- for message in loop_messages -%}{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model\\n'}}{%- endif -%}"
)


def copy_model(source, dest, split_max_tensors=0, extra=None, drop=(), extra_ints=None, rename_tokens=None):
    """Rewrites `source` (every key but those in `drop`, and every tensor) to
    `dest`, with the string keys of `extra` and the uint32 keys of
    `extra_ints` added and the vocabulary's tokens renamed as `rename_tokens`
    (id -> text) says, optionally split gguf-split style into shards of at
    most `split_max_tensors` tensors."""
    reader = GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(dest, arch, split_max_tensors=split_max_tensors)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture" or field.name.startswith("split."):
            continue
        if field.name in drop:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == "tokenizer.ggml.tokens" and rename_tokens:
            value = [rename_tokens.get(i, text) for i, text in enumerate(value)]
        writer.add_key_value(field.name, value, vtype, sub_type=sub_type)
    for key, value in (extra or {}).items():
        writer.add_key_value(key, value, GGUFValueType.STRING)
    for key, value in (extra_ints or {}).items():
        writer.add_key_value(key, value, GGUFValueType.UINT32)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def greedy(api, model, max_tokens=24):
    pieces = api.stream(
        "Generate", model=model, prompt=PROMPT, max_tokens=max_tokens, sampling={"temperature": 0.0}
    )
    tokens = [t for p in pieces for t in p.token_ids]
    return tokens, "".join(p.text for p in pieces), pieces[-1]


@pytest.fixture(scope="module")
def models(tmp_path_factory, demo_model):
    """The demo model as one file, as a 3-shard split set, and with a chat template."""
    d = tmp_path_factory.mktemp("models")
    (d / "single.gguf").hardlink_to(demo_model)
    n_tensors = len(GGUFReader(demo_model).tensors)
    copy_model(demo_model, d / "split.gguf", split_max_tensors=math.ceil(n_tensors / 3))
    copy_model(demo_model, d / "chatty.gguf", extra={"tokenizer.chat_template": GEMMA3_TEMPLATE})
    return d


def test_a_three_shard_split_set_answers_like_the_single_file(models, router_bin, tmp_path):
    shards = sorted(p.name for p in models.glob("split-*.gguf"))
    assert shards == [f"split-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    with running_daemon(router_bin, models, tmp_path) as channel:
        api = Dynamic(channel, SERVICE)
        listed = Dynamic(channel, "llama_router.v1.ModelService").unary("GetModel", id="split")
        assert len(listed.files) == 3
        single = greedy(api, "single")
        split = greedy(api, "split")
        assert len(single[0]) == 24
        assert split[0] == single[0]
        assert split[1] == single[1]
        assert api.enum_name("llama_router.v1.FinishReason", split[2].finish_reason) == "FINISH_REASON_LENGTH"


def test_a_model_with_a_chat_template_chats(models, router_bin, tmp_path):
    question = "What is the capital of France?"
    rendered = f"<bos><start_of_turn>user\nBe brief.\n\n{question}<end_of_turn>\n<start_of_turn>model\n"
    with running_daemon(router_bin, models, tmp_path) as channel:
        api = Dynamic(channel, SERVICE)
        pieces = api.stream(
            "Chat",
            model="chatty",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
            max_tokens=16,
            sampling={"temperature": 0.0},
        )
        # The prompt is the template's rendering, special tokens parsed, one BOS.
        expected = api.unary("Tokenize", model="chatty", text=rendered, add_special=False, parse_special=True).tokens
        start_of_turn = api.unary("Tokenize", model="chatty", text="<start_of_turn>", parse_special=True).tokens
        assert len(start_of_turn) == 1 and list(expected).count(start_of_turn[0]) == 2
        assert pieces[-1].usage.prompt_tokens == len(expected)
        assert pieces[-1].usage.completion_tokens > 0
        # The same prompt through Generate gives the same answer (the base model's, whatever it is).
        raw = api.stream("Generate", model="chatty", prompt=rendered, max_tokens=16, sampling={"temperature": 0.0})
        assert [t for p in raw for t in p.token_ids] == [t for p in pieces for t in p.token_ids]
