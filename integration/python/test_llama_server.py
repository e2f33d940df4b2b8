"""llama-server's router mode: the binary started as `llama-server` (a
symlink) with llama-server's flags and a preset INI, and llama-server's own
endpoints driven with plain HTTP, shape by shape; a model without a chat
template chats through the `openai` package (ChatML fallback)."""

import contextlib
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request

import jsonschema
import openai
import pytest
from test_inference import PROMPT, copy_model
from test_openai_http import free_port

PRESET = """version = 1
; every model
[*]
c = 1024
temp = 0.3

[base]
np = 2
n-gpu-layers = 0
load-on-startup = true
LLAMA_ARG_CACHE_TYPE_K = q8_0
stop-timeout = 3

[plain]
no-cache-prompt = true
"""


@pytest.fixture(scope="module")
def llama_server(router_bin, tmp_path_factory):
    link = tmp_path_factory.mktemp("bin") / "llama-server"
    link.symlink_to(router_bin)
    return link


@pytest.fixture(scope="module")
def models(tmp_path_factory, demo_model):
    d = tmp_path_factory.mktemp("models")
    (d / "base.gguf").hardlink_to(demo_model)
    copy_model(demo_model, d / "plain.gguf", drop={"tokenizer.chat_template"})
    # Gemma has no fill-in-the-middle tokens: this copy names three unused ones as such.
    fim = {"tokenizer.ggml.fim_pre_token_id": 6, "tokenizer.ggml.fim_suf_token_id": 7, "tokenizer.ggml.fim_mid_token_id": 8}
    copy_model(demo_model, d / "fim.gguf", extra_ints=fim)
    return d


def call(url, body=None):
    """(status, parsed JSON or text) of a GET, or of a POST of `body`."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            text = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        text, status = e.read().decode(), e.code
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


@contextlib.contextmanager
def started(llama_server, tmp, *args):
    """`llama-server ARGS` with its socket in `tmp`; yields (base URL, process)."""
    port = free_port()
    log_path = tmp / "daemon.log"
    env = {**os.environ, "LLAMA_ROUTER_SOCKET": str(tmp / "router.sock")}
    proc = subprocess.Popen(
        [str(llama_server), *args, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=open(log_path, "w"), env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            with contextlib.suppress(OSError):
                if call(base + "/health")[0] == 200:
                    break
            assert time.time() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield base, log_path
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log_path.read_text()


@pytest.fixture(scope="module")
def server(llama_server, models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("daemon")
    preset = tmp / "models.ini"
    preset.write_text(PRESET)
    args = ["--models-dir", str(models), "--models-max", "1", "--models-preset", str(preset), "--metrics", "--no-webui"]
    with started(llama_server, tmp, *args) as (base, log):
        yield base, log


def test_the_router_answers_props_as_llama_server_does(server):
    status, props = call(server[0] + "/props")
    assert status == 200
    assert props["role"] == "router"
    assert props["max_instances"] == 1
    assert props["models_autoload"] is True


def test_preset_values_show_in_props_of_the_model(server):
    status, props = call(server[0] + "/props?model=base")
    assert status == 200, props
    assert props["default_generation_settings"]["n_ctx"] == 1024  # [*] c
    assert props["total_slots"] == 2  # [base] np
    settings = props["llama_router"]["settings"]
    assert settings["cache_type_k"] == "q8_0"  # an LLAMA_ARG_* key
    assert settings["gpu_layers"] == "0"
    assert settings["sampling"]["temperature"] == pytest.approx(0.3)
    status, plain = call(server[0] + "/props?model=plain")
    assert plain["total_slots"] == 4 and plain["default_generation_settings"]["n_ctx"] == 1024
    assert call(server[0] + "/props?model=nope")[0] == 404


def test_harmless_flags_are_one_warning(server):
    warnings = [line for line in server[1].read_text().splitlines() if "no effect" in line]
    assert len(warnings) == 1 and "--metrics" in warnings[0] and "--no-webui" in warnings[0], warnings


def test_tokenize_with_pieces_and_detokenize(server):
    base = server[0]
    status, plain = call(base + "/tokenize", {"model": "base", "content": "Hello world"})
    assert status == 200 and all(isinstance(t, int) for t in plain["tokens"])
    _, pieces = call(base + "/tokenize", {"model": "base", "content": "Hello world", "with_pieces": True})
    assert [p["id"] for p in pieces["tokens"]] == plain["tokens"]
    assert "".join(p["piece"] for p in pieces["tokens"]) == "Hello world"
    _, bos = call(base + "/tokenize", {"model": "base", "content": "Hello world", "add_special": True})
    assert len(bos["tokens"]) == len(plain["tokens"]) + 1
    status, text = call(base + "/detokenize", {"model": "base", "tokens": plain["tokens"]})
    assert status == 200 and text == {"content": "Hello world"}


def test_completion_whole_and_streamed(server):
    body = {"model": "base", "prompt": PROMPT, "n_predict": 8, "temperature": 0, "seed": 1}
    status, whole = call(server[0] + "/completion", body)
    assert status == 200, whole
    assert whole["stop"] is True and whole["stop_type"] in ("eos", "limit")
    assert whole["tokens_predicted"] == 8 and whole["stop_type"] == "limit"
    assert whole["tokens_evaluated"] > 3 and whole["content"]
    request = urllib.request.Request(
        server[0] + "/completion",
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    events = []
    with urllib.request.urlopen(request, timeout=120) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for line in r:
            line = line.decode().strip()
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert [e["stop"] for e in events][-1] is True and not any(e["stop"] for e in events[:-1])
    assert "".join(e["content"] for e in events) == whole["content"]
    # n_probs: each token with its 3 most likely alternatives; greedy picks the first.
    status, probs = call(server[0] + "/completion", {**body, "n_probs": 3})
    assert status == 200, probs
    entries = probs["completion_probabilities"]
    assert len(entries) == 8 and probs["content"] == whole["content"]
    assert "".join(bytes(e["bytes"]).decode(errors="replace") for e in entries) == whole["content"]
    for e in entries:
        assert len(e["top_logprobs"]) == 3 and e["logprob"] <= 0
        assert e["top_logprobs"][0]["id"] == e["id"] and e["top_logprobs"][0]["logprob"] == e["logprob"]
        assert [t["logprob"] for t in e["top_logprobs"]] == sorted((t["logprob"] for t in e["top_logprobs"]), reverse=True)
    status, err = call(server[0] + "/completion", {**body, "n_probs": 21})
    assert status == 400 and "n_probs" in err["error"]["message"]


def test_cache_prompt_reuses_the_shared_prefix_unless_turned_off(server):
    body = {"model": "base", "prompt": "Cache: " + PROMPT, "n_predict": 4, "temperature": 0}
    _, first = call(server[0] + "/completion", {**body, "cache_prompt": False})
    assert first["timings"]["cache_n"] == 0, first
    assert first["timings"]["prompt_n"] == first["tokens_evaluated"]
    _, again = call(server[0] + "/completion", body)
    n = again["tokens_evaluated"]
    assert (again["timings"]["cache_n"], again["timings"]["prompt_n"]) == (n - 1, 1), again
    assert again["tokens_predicted"] == 4 and again["content"]
    # Turned off for one model (`no-cache-prompt` in its preset section).
    status, props = call(server[0] + "/props?model=plain")
    assert status == 200 and props["llama_router"]["settings"]["cache_prompt"] is False
    for _ in range(2):
        _, plain = call(server[0] + "/completion", {**body, "model": "plain"})
        assert plain["timings"]["cache_n"] == 0, plain


def test_apply_template_renders_the_prompt_a_chat_generates_from(server):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    status, plain = call(server[0] + "/apply-template", {"model": "plain", "messages": messages})
    assert status == 200, plain
    assert plain == {"prompt": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"}
    _, one = call(server[0] + "/apply-template", {"model": "base", "messages": messages[1:]})
    assert one == {"prompt": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"}
    status, err = call(server[0] + "/apply-template", {"model": "nope", "messages": messages})
    assert status == 404, err
    status, err = call(server[0] + "/apply-template", {"model": "plain", "messages": []})
    assert status == 400, err


def test_a_stop_word_is_named_in_the_completion(server):
    body = {"model": "base", "prompt": PROMPT, "n_predict": 8, "temperature": 0}
    _, whole = call(server[0] + "/completion", body)
    word = whole["content"].split()[1]
    _, stopped = call(server[0] + "/completion", {**body, "stop": [word]})
    assert (stopped["stop_type"], stopped["stopping_word"]) == ("word", word), stopped
    assert stopped["content"] == whole["content"][: whole["content"].index(word)]


def test_autoload_false_refuses_a_model_that_is_not_loaded(server):
    base = server[0]
    call(base + "/models/unload", {"model": "plain"})
    status, err = call(base + "/tokenize?autoload=false", {"model": "plain", "content": "x"})
    assert status == 400 and "autoload=false" in err["error"]["message"], err
    status, err = call(base + "/v1/chat/completions?autoload=false", {"model": "plain", "messages": [{"role": "user", "content": "x"}]})
    assert status == 400, err
    [plain] = [m for m in call(base + "/models")[1]["data"] if m["id"] == "plain"]
    assert plain["status"]["value"] != "loaded", plain
    assert call(base + "/completion?autoload=maybe", {"model": "plain", "prompt": "x"})[0] == 400
    status, tokens = call(base + "/tokenize?autoload=true", {"model": "plain", "content": "x"})
    assert status == 200 and tokens["tokens"], tokens
    assert call(base + "/tokenize?autoload=false", {"model": "plain", "content": "x"})[0] == 200


def test_a_grammar_constrains_the_completion(server):
    body = {"model": "base", "prompt": "Is Paris in France? Answer:", "n_predict": 16, "temperature": 0}
    grammar = 'root ::= " " ("yes" | "no") "."'
    status, answer = call(server[0] + "/completion", {**body, "grammar": grammar})
    assert status == 200, answer
    assert answer["content"] in (" yes.", " no.") and answer["stop_type"] == "eos", answer
    status, err = call(server[0] + "/completion", {**body, "grammar": "root ::= ("})
    assert status == 400 and "grammar" in err["error"]["message"], err
    status, err = call(server[0] + "/completion", {**body, "grammar": 'start ::= "a"'})
    assert status == 400, err


def test_a_grammar_no_token_can_satisfy_ends_the_request_not_the_worker(server):
    # No token can ever match NUL: llama.cpp would abort the worker on
    # accepting one; the request must end with an error and the worker live on.
    base = server[0]
    body = {"model": "base", "prompt": "Hi", "n_predict": 4}
    assert call(base + "/completion", body)[0] == 200
    [before] = [m for m in call(base + "/models")[1]["data"] if m["id"] == "base"]
    status, err = call(base + "/completion", {**body, "grammar": 'root ::= "\\u0000"'})
    assert status != 200 and "grammar allows no token" in json.dumps(err), (status, err)
    [after] = [m for m in call(base + "/models")[1]["data"] if m["id"] == "base"]
    assert after["state"] == "ready" and after["worker_pid"] == before["worker_pid"], after
    assert call(base + "/completion", body)[0] == 200


def test_json_object_answers_are_json(server):
    client = openai.OpenAI(base_url=server[0] + "/v1", api_key="none", max_retries=0, timeout=120)
    subjects = ["a cat", "Paris", "a car", "the moon", "a book", "an apple", "a river", "a song", "a chair", "a storm"]
    # One example turn keeps the tiny demo model's objects short; the grammar
    # makes them JSON, and ends the answer when the object closes.
    example = [
        {"role": "user", "content": "Describe a dog as a JSON object with a name and a colour."},
        {"role": "assistant", "content": '{"name": "dog", "colour": "brown"}'},
    ]
    for subject in subjects:
        answer = client.chat.completions.create(
            model="base",
            messages=[*example, {"role": "user", "content": f"Describe {subject} as a JSON object with a name and a colour."}],
            response_format={"type": "json_object"},
            max_tokens=96,
            temperature=0.7,
            seed=len(subject),
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        assert isinstance(json.loads(choice.message.content), dict), choice.message.content



PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "pet": {"enum": ["cat", "dog", "none"]},
    },
    "required": ["name", "age", "pet"],
    "additionalProperties": False,
}


def check_person(text):
    person = json.loads(text)
    assert set(person) == {"name", "age", "pet"}, text
    assert isinstance(person["name"], str) and len(person["name"]) <= 12, text
    assert isinstance(person["age"], int) and 0 <= person["age"] <= 120, text
    assert person["pet"] in ("cat", "dog", "none"), text


# Twenty different requests for the same shape of answer.
PERSON_PROMPTS = [
    f"{verb} {who}: their name, age and pet."
    for verb in ("Invent", "Describe", "Make up", "Tell me about")
    for who in ("a person", "a pirate", "a child", "an old farmer", "a famous chef")
]


def test_json_schema_answers_match_the_schema_on_every_api(server):
    client = openai.OpenAI(base_url=server[0] + "/v1", api_key="none", max_retries=0, timeout=120)
    assert len(set(PERSON_PROMPTS)) == 20
    for seed, prompt in enumerate(PERSON_PROMPTS):
        answer = client.chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": prompt}],
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
            max_tokens=160,
            temperature=0.8,
            seed=seed,
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), PERSON)
        check_person(choice.message.content)
    # llama-server's /completion takes the schema as `json_schema`.
    status, body = call(server[0] + "/completion", {"model": "base", "prompt": "A person as JSON:", "json_schema": PERSON, "n_predict": 160})
    assert status == 200, body
    check_person(body["content"])
    # The Responses API takes it as text.format.
    response = client.responses.create(
        model="base",
        input="Invent a person.",
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}},
        max_output_tokens=160,
    )
    check_person(response.output_text)
    # A schema llama.cpp cannot turn into a grammar is the client's error, named.
    with pytest.raises(openai.BadRequestError, match="json_schema"):
        client.chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}},
        )
    with pytest.raises(openai.BadRequestError, match="not both"):
        client.chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": PERSON}},
            extra_body={"grammar": 'root ::= "a"'},
        )


def test_infill_lays_out_prefix_suffix_and_extra_around_the_fim_tokens(server):
    base = server[0]
    body = {"model": "fim", "input_prefix": "def add(a, b):\n    ", "input_suffix": "\n\nprint(add(1, 2))\n", "prompt": "return", "n_predict": 6, "temperature": 0}
    status, answer = call(base + "/infill", body)
    assert status == 200, answer
    assert answer["stop"] is True and answer["tokens_predicted"] >= 1

    def count(text):
        status, t = call(base + "/tokenize", {"model": "fim", "content": text, "add_special": False})
        assert status == 200, t
        return len(t["tokens"])

    # BOS, FIM_PRE, prefix, FIM_SUF, suffix, FIM_MID, prompt.
    laid_out = 1 + 1 + count(body["input_prefix"]) + 1 + count(body["input_suffix"]) + 1 + count("return")
    assert answer["tokens_evaluated"] == laid_out, answer
    # Other files come first, each set off by a snippet marker (no repo-level tokens here).
    extra = [{"filename": "util.py", "text": "X = 1\n"}]
    status, more = call(base + "/infill", {**body, "input_extra": extra})
    assert status == 200, more
    assert more["tokens_evaluated"] == laid_out + count("\n\n--- snippet ---\n\n") + count("X = 1\n")
    # A model without FIM tokens says so.
    status, err = call(base + "/infill", {**body, "model": "base"})
    assert status == 400 and "fill-in-the-middle" in err["error"]["message"], err
    # /completion still needs its prompt.
    status, err = call(base + "/completion", {"model": "fim"})
    assert status == 400 and "prompt" in err["error"]["message"], err


def test_models_sse_streams_status_changes_in_llama_servers_shape(server):
    base = server[0]
    events = []
    seen_loaded = threading.Event()

    def watch():
        with urllib.request.urlopen(base + "/models/sse", timeout=120) as r:
            for line in r:
                line = line.decode().strip()
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    if events[-1].get("data", {}).get("status") == "loaded" and events[-1]["model"] == "plain":
                        seen_loaded.set()
                        return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(0.5)
    call(base + "/models/unload", {"model": "plain"})
    status, _ = call(base + "/models/load", {"model": "plain"})
    assert status == 200
    assert seen_loaded.wait(60), events
    plain = [e for e in events if e["model"] == "plain"]
    assert all(e["event"] == "model_status" for e in plain), plain
    statuses = [e["data"]["status"] for e in plain]
    assert statuses[-2:] == ["loading", "loaded"], statuses


def test_metrics_of_one_model_use_llama_servers_names(server):
    base = server[0]
    status, _ = call(base + "/completion", {"model": "base", "prompt": PROMPT, "n_predict": 4})
    assert status == 200
    request = urllib.request.Request(base + "/metrics?model=base")
    with urllib.request.urlopen(request, timeout=30) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values["llamacpp:tokens_predicted_total"] >= 4, text
    assert values["llamacpp:prompt_tokens_total"] > 3, text
    assert values["llamacpp:predicted_tokens_seconds"] > 0, text
    assert "llamacpp:requests_processing" in values, text
    assert call(base + "/metrics?model=nope")[0] == 404


def test_embedding_in_llama_servers_shape(server):
    status, rows = call(server[0] + "/embedding", {"model": "base", "content": "a cat"})
    assert status == 200 and isinstance(rows, list) and rows[0]["index"] == 0
    (vector,) = rows[0]["embedding"]
    assert len(vector) == 640
    assert sum(v * v for v in vector) == pytest.approx(1.0, rel=1e-3)
    _, two = call(server[0] + "/embedding", {"model": "base", "content": ["a", "b"]})
    assert [r["index"] for r in two] == [0, 1]


def test_a_model_without_a_chat_template_chats_in_chatml(server, inspect, models):
    assert inspect(models / "plain.gguf")["summary"]["has_chat_template"] is False
    client = openai.OpenAI(base_url=server[0] + "/v1", api_key="none", max_retries=0, timeout=120)
    answer = client.chat.completions.create(
        model="plain", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens > 3
    assert "uses ChatML" in server[1].read_text()


def test_unsupported_and_unknown_flags_are_named_in_one_error(llama_server, tmp_path):
    proc = subprocess.run([str(llama_server), "--lora", "a.gguf", "--bogus", "-c", "512"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--lora" in proc.stderr and "--bogus" in proc.stderr and "512" not in proc.stderr, proc.stderr
    proc = subprocess.run([str(llama_server), "-ctk", "bf16"], capture_output=True, text=True)
    assert proc.returncode == 2 and "bf16" in proc.stderr


def test_an_unknown_preset_key_names_section_and_key(llama_server, models, tmp_path):
    preset = tmp_path / "bad.ini"
    preset.write_text("[base]\nctx-sise = 5\n")
    env = {**os.environ, "LLAMA_ROUTER_SOCKET": str(tmp_path / "s.sock")}
    proc = subprocess.run(
        [str(llama_server), "--models-dir", str(models), "--models-preset", str(preset), "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert proc.returncode != 0 and "[base] ctx-sise" in proc.stderr, proc.stderr


def test_the_subcommand_is_the_same_mode(router_bin):
    proc = subprocess.run([str(router_bin), "llama-server", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--models-preset" in proc.stdout and "-ngl" in proc.stdout
