"""Parking (`--park-bytes`): under `--models-max 1` two models alternate; the
evicted one keeps its worker, parked without a context, and the next request
for it wakes that same worker process instead of loading the model again.
Without a budget the evicted model is released, as before."""

import json
import os
import signal
import time
import urllib.request

import openai
import pytest
from conftest import running_daemon
from test_openai_http import free_port


@pytest.fixture(scope="module")
def models(tmp_path_factory, demo_model):
    d = tmp_path_factory.mktemp("models")
    for name in ("one", "two"):
        (d / f"{name}.gguf").hardlink_to(demo_model)
    return d


def states(base):
    with urllib.request.urlopen(base + "/models", timeout=30) as r:
        listed = json.loads(r.read())["data"]
    return {m["id"]: m for m in listed}


def ask(client, model):
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, temperature=0
    )
    return reply.choices[0].message.content


def wait_for(base, model, state, seconds=30):
    deadline = time.time() + seconds
    while (now := states(base)[model])["state"] != state:
        assert time.time() < deadline, f"{model} is {now['state']}, not {state}"
        time.sleep(0.05)
    return now


def serve(router_bin, models, tmp_path, *flags):
    port = free_port()
    flags = ["--http-port", str(port), "--models-max", "1", "--parallel", "1", *flags]
    daemon = running_daemon(router_bin, models, tmp_path, *flags)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    return daemon, client, f"http://127.0.0.1:{port}"


def test_an_evicted_model_is_parked_and_woken_in_its_own_worker(router_bin, models, demo_model, tmp_path):
    budget = str(demo_model.stat().st_size)
    daemon, client, base = serve(router_bin, models, tmp_path, "--park-bytes", budget)
    with daemon:
        first = ask(client, "one")
        pid = states(base)["one"]["worker_pid"]
        assert pid
        ask(client, "two")
        one = wait_for(base, "one", "parked")
        assert one["worker_pid"] == pid, "the parked model keeps its worker"
        assert one["status"] == {"value": "unloaded", "parked": True}
        os.kill(pid, 0)  # still running
        assert ask(client, "one") == first, "the woken worker answers as before"
        listed = states(base)
        assert listed["one"]["state"] == "ready"
        assert listed["one"]["worker_pid"] == pid, "woken, not started again"
        assert listed["two"]["state"] == "parked"
        with urllib.request.urlopen(base + "/status", timeout=30) as r:
            status = json.loads(r.read())
        assert status["models_by_state"]["parked"] == 1
        assert status["models_by_state"]["ready"] == 1
        with urllib.request.urlopen(base + "/models/one/logs", timeout=30) as r:
            lines = [line["text"] for line in json.loads(r.read())["lines"]]
        assert any(text.startswith("worker parked in") for text in lines), lines
        assert any(text.startswith("worker woke in") for text in lines), lines
    log = (tmp_path / "daemon.log").read_text()
    assert "model one: worker woke in" in log, log[-3000:]


def test_a_parked_worker_that_dies_is_a_crash_and_the_next_request_loads_afresh(router_bin, models, demo_model, tmp_path):
    budget = str(demo_model.stat().st_size)
    daemon, client, base = serve(router_bin, models, tmp_path, "--park-bytes", budget)
    with daemon:
        first = ask(client, "one")
        ask(client, "two")
        pid = wait_for(base, "one", "parked")["worker_pid"]
        os.kill(pid, signal.SIGKILL)
        failed = wait_for(base, "one", "failed")
        assert "SIGKILL" in failed["failure_reason"], failed
        assert ask(client, "one") == first
        assert states(base)["one"]["worker_pid"] not in (None, pid)


def test_without_a_budget_the_evicted_model_is_released(router_bin, models, tmp_path):
    daemon, client, base = serve(router_bin, models, tmp_path)
    with daemon:
        ask(client, "one")
        pid = states(base)["one"]["worker_pid"]
        ask(client, "two")
        one = wait_for(base, "one", "unloaded")
        assert one["worker_pid"] is None
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"worker {pid} of the evicted model still runs")
