"""Shared fixtures: the binary under test, helpers to run `inspect`, a
running daemon, and a gRPC client that knows services only by reflection."""

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def router_bin() -> Path:
    path = Path(os.environ.get("ROUTER_TEST_BIN", REPO / "target" / "debug" / "llama-router"))
    if not path.is_file():
        pytest.fail(f"{path} not found: build it (make test-python does) or set ROUTER_TEST_BIN")
    return path


@pytest.fixture(scope="session")
def demo_model() -> Path:
    path = Path(os.environ.get("DEMO_MODEL", Path.home() / ".cache/llama-router/models/gemma-3-270m-q4_k_m.gguf"))
    if not path.is_file():
        pytest.fail(f"demo model {path} missing: run `make demo-model`")
    return path


@pytest.fixture
def inspect(router_bin):
    """Runs `llama-router inspect --json PATH` and returns the parsed document."""

    def run(path: Path) -> dict:
        proc = subprocess.run([router_bin, "inspect", "--json", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    return run


@contextlib.contextmanager
def running_daemon(router_bin, models_dir, tmp_path, *flags, env=None):
    """`llama-router serve` on models_dir (with `env` added to the environment);
    yields a connected channel, then stops it (exit 0). Its log is tmp_path/daemon.log."""
    socket = tmp_path / "router.sock"
    log_path = tmp_path / "daemon.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [router_bin, "serve", "--models-dir", str(models_dir), "--socket", str(socket), *flags],
        stdout=subprocess.DEVNULL,
        stderr=log,
        # Crash reports go to the test's directory, not the user's.
        env={**os.environ, "STATE_DIRECTORY": str(tmp_path), **(env or {})},
    )
    # gRPC C-core sends the socket path as :authority over a Unix socket, which
    # the daemon's HTTP/2 stack (h2) refuses as malformed; "localhost" is the
    # convention (as grpc-go and grpcurl -authority localhost do).
    channel = grpc.insecure_channel(f"unix:{socket}", options=[("grpc.default_authority", "localhost")])
    try:
        deadline = time.time() + 20
        while not socket.exists() and time.time() < deadline:
            time.sleep(0.05)
        grpc.channel_ready_future(channel).result(timeout=20)
        yield channel
    finally:
        channel.close()
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log_path.read_text()


class Dynamic:
    """Calls methods of a service described only by reflection."""

    def __init__(self, channel, service, metadata=None):
        self.channel = channel
        self.metadata = metadata
        self.name = service
        self.db = ProtoReflectionDescriptorDatabase(channel)
        self.pool = DescriptorPool(self.db)
        self.service = self.pool.FindServiceByName(service)

    def _types(self, name):
        method = self.service.methods_by_name[name]
        return (
            message_factory.GetMessageClass(method.input_type),
            message_factory.GetMessageClass(method.output_type),
        )

    def unary(self, name, **fields):
        req, resp = self._types(name)
        call = self.channel.unary_unary(
            f"/{self.name}/{name}", request_serializer=req.SerializeToString, response_deserializer=resp.FromString
        )
        return call(req(**fields), timeout=60, metadata=self.metadata)

    def stream(self, name, **fields):
        req, resp = self._types(name)
        call = self.channel.unary_stream(
            f"/{self.name}/{name}", request_serializer=req.SerializeToString, response_deserializer=resp.FromString
        )
        return list(call(req(**fields), timeout=120, metadata=self.metadata))

    def enum_name(self, enum, number):
        return self.pool.FindEnumTypeByName(enum).values_by_number[number].name
