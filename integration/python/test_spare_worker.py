"""The spare worker: once a first worker started, the daemon keeps one more
process started ahead (`llama-router worker-standby`), llama.cpp initialised
and no model loaded. The next load takes it: that model's worker is the
spare's process, and another spare starts in its place. A spare that died
before it was needed costs nothing but itself: the load starts its worker
afresh. `--no-spare-worker` keeps none."""

import os
import signal
import time

import pytest
from test_parking import ask, models, serve, states  # noqa: F401 (models: a fixture)


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def spares_of(daemon_pid):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if b"worker-standby" in argv and parent_of(int(entry)) == daemon_pid:
                found.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return found


def wait_for_spare(daemon_pid, other_than=(), seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        spares = [pid for pid in spares_of(daemon_pid) if pid not in other_than]
        if spares:
            return spares
        time.sleep(0.05)
    pytest.fail(f"no spare worker of daemon {daemon_pid} appeared")


def gone(pid, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True  # exited, not yet reaped
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.05)
    return False


def first_answer(client, base):
    """Loads "one"; its answer, the daemon's pid and the spare started then."""
    first = ask(client, "one")
    daemon_pid = parent_of(states(base)["one"]["worker_pid"])
    [spare] = wait_for_spare(daemon_pid)
    return first, daemon_pid, spare


def test_the_next_load_takes_the_spare_and_another_starts(router_bin, models, tmp_path):
    daemon, client, base = serve(router_bin, models, tmp_path)
    with daemon:
        first, daemon_pid, spare = first_answer(client, base)
        assert ask(client, "two") == first, "the spare serves the model as a fresh worker does"
        assert states(base)["two"]["worker_pid"] == spare, "the load took the spare's process"
        [after] = wait_for_spare(daemon_pid, other_than=[spare])
        assert after != spare
    assert gone(after), "a spare outlives its daemon"


def test_a_dead_spare_costs_only_itself(router_bin, models, tmp_path):
    daemon, client, base = serve(router_bin, models, tmp_path)
    with daemon:
        first, daemon_pid, spare = first_answer(client, base)
        os.kill(spare, signal.SIGKILL)
        assert gone(spare)
        assert ask(client, "two") == first
        pid = states(base)["two"]["worker_pid"]
        assert pid not in (None, spare)
        assert parent_of(pid) == daemon_pid


def test_no_spare_worker_keeps_none(router_bin, models, tmp_path):
    daemon, client, base = serve(router_bin, models, tmp_path, "--no-spare-worker")
    with daemon:
        ask(client, "one")
        daemon_pid = parent_of(states(base)["one"]["worker_pid"])
        time.sleep(1)
        assert spares_of(daemon_pid) == []
        ask(client, "two")
        time.sleep(1)
        assert spares_of(daemon_pid) == []
