#!/usr/bin/env python3
"""A/B of the swap between llama-router binaries, for a change that one
binary has and the other lacks (e.g. a build without the llama.cpp patch).

Usage: scripts/swap-ab.py BIN_A BIN_B [BIN ...]

Each binary serves two hard links of the demo model (DEMO_MODEL, else the
cache) with `--models-max 1 --parallel 8 --ctx-size 512 --gpu-layers 0`, as
bench/peer.rs runs it, and times 6 one-token completions that alternate
between the two models: each a swap, from the page cache. The binaries take
turns, 3 rounds each, so a host whose speed drifts moves them alike; it
prints each one's median and every swap in ms."""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

MODEL = os.environ.get("DEMO_MODEL", os.path.expanduser("~/.cache/llama-router/models/gemma-3-270m-q4_k_m.gguf"))
ROUNDS = 3
SWAPS = 6


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def complete(base, model):
    """Milliseconds to a one-token completion of `model`."""
    body = json.dumps({"model": model, "prompt": "The capital of France is", "max_tokens": 1, "temperature": 0}).encode()
    request = urllib.request.Request(base + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as r:
        r.read()
    return (time.perf_counter() - started) * 1000


def swaps(binary):
    with tempfile.TemporaryDirectory() as state:
        models = os.path.join(state, "models")
        os.mkdir(models)
        for name in "ab":
            os.link(MODEL, os.path.join(models, name + ".gguf"))
        port = free_port()
        flags = ["--models-max", "1", "--parallel", "8", "--ctx-size", "512", "--threads", str(os.cpu_count()), "--gpu-layers", "0"]
        daemon = subprocess.Popen(
            [binary, "serve", "--models-dir", models, "--socket", os.path.join(state, "router.sock"), "--http-port", str(port), *flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "STATE_DIRECTORY": state},
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/health", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.1)
            complete(base, "a")
            complete(base, "b")  # both files mapped once, the spare worker started
            times = []
            for i in range(SWAPS):
                time.sleep(0.5)  # the old worker's exit and the new spare settle
                times.append(complete(base, "ab"[i % 2]))
            return times
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)


def main():
    binaries = sys.argv[1:]
    if len(binaries) < 2:
        sys.exit(__doc__)
    times = {b: [] for b in binaries}
    for _ in range(ROUNDS):
        for b in binaries:
            times[b] += swaps(b)
    for b, t in times.items():
        print(f"{b}: median {statistics.median(t):.1f} ms over {len(t)} swaps: " + " ".join(f"{x:.0f}" for x in t))


if __name__ == "__main__":
    main()
