#!/usr/bin/env bash
# systemd-analyze verify on llama-server.service, alone and with the debug
# drop-in applied; any diagnostic fails. ExecStart is pointed at the built
# binary (verify checks that it exists and is executable).
set -euo pipefail
bin=$(realpath "${1:-target/debug/llama-router}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/plain" "$tmp/debug"
sed "s|/usr/bin/llama-router|$bin|" systemd/llama-server.service > "$tmp/plain/llama-server.service"
# A drop-in's assignments apply after the unit's, as if appended to it.
cat "$tmp/plain/llama-server.service" systemd/llama-server-debug.conf > "$tmp/debug/llama-server.service"
status=0
for unit in "$tmp/plain/llama-server.service" "$tmp/debug/llama-server.service"; do
    out=$(systemd-analyze verify "$unit" 2>&1) || status=1
    if [ -n "$out" ]; then
        echo "$out" >&2
        status=1
    fi
done
[ "$status" -eq 0 ] && echo "systemd-analyze verify: llama-server.service and its debug drop-in are clean"
exit "$status"
