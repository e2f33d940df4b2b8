#!/usr/bin/env bash
# The main job, end to end: start the daemon on the demo model's directory,
# ask it for its models, load the demo model into RAM, generate an answer
# (its worker process starts on that first request), show the status, stop.
set -euo pipefail
bin=${BIN:-target/release/llama-router}
models=${MODELS_CACHE:-$HOME/.cache/llama-router/models}
state=$(mktemp -d)
sock="$state/router.sock"

"$bin" serve --models-dir "$models" --socket "$sock" 2>"$state/daemon.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; rm -rf "$state"' EXIT

for _ in $(seq 100); do
    [ -S "$sock" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$state/daemon.log" >&2; exit 1; }
    sleep 0.1
done
export LLAMA_ROUTER_ENDPOINT="$sock"
"$bin" models
"$bin" load gemma-3-270m-q4_k_m
echo "--- generate (greedy):"
"$bin" generate gemma-3-270m-q4_k_m "The capital of France is" --temperature 0 --max-tokens 32 --usage
"$bin" status
