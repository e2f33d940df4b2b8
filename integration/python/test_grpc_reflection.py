"""A Python gRPC client that knows nothing but server reflection.

No .proto and no generated stubs: the client learns ModelService from the
daemon itself, as grpcurl or any dynamic client would, then calls it.
"""

import subprocess
import time

import grpc
import numpy as np
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from gguf import GGUFWriter
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

SERVICE = "llama_router.v1.ModelService"


def tiny_model(path):
    w = GGUFWriter(path, "llama")
    w.add_string("general.name", "Tiny")
    w.add_tensor("token_embd.weight", np.ones((8, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture
def daemon(tmp_path, router_bin):
    models = tmp_path / "models"
    models.mkdir()
    tiny_model(models / "tiny.gguf")
    socket = tmp_path / "router.sock"
    log = open(tmp_path / "daemon.log", "w")
    proc = subprocess.Popen(
        [router_bin, "serve", "--models-dir", str(models), "--socket", str(socket)],
        stdout=subprocess.DEVNULL,
        stderr=log,
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
        assert proc.wait(timeout=15) == 0, (tmp_path / "daemon.log").read_text()


class Dynamic:
    """Calls methods of a service described only by reflection."""

    def __init__(self, channel):
        self.channel = channel
        self.db = ProtoReflectionDescriptorDatabase(channel)
        self.pool = DescriptorPool(self.db)
        self.service = self.pool.FindServiceByName(SERVICE)

    def _types(self, name):
        method = self.service.methods_by_name[name]
        return (
            message_factory.GetMessageClass(method.input_type),
            message_factory.GetMessageClass(method.output_type),
        )

    def unary(self, name, **fields):
        req, resp = self._types(name)
        call = self.channel.unary_unary(
            f"/{SERVICE}/{name}", request_serializer=req.SerializeToString, response_deserializer=resp.FromString
        )
        return call(req(**fields), timeout=30)

    def stream(self, name, **fields):
        req, resp = self._types(name)
        call = self.channel.unary_stream(
            f"/{SERVICE}/{name}", request_serializer=req.SerializeToString, response_deserializer=resp.FromString
        )
        return list(call(req(**fields), timeout=30))

    def enum_name(self, enum, number):
        return self.pool.FindEnumTypeByName(enum).values_by_number[number].name


def test_services_are_discoverable(daemon):
    services = set(ProtoReflectionDescriptorDatabase(daemon).get_services())
    assert {SERVICE, "grpc.health.v1.Health"} <= services


def test_list_load_and_errors_through_reflection_only(daemon):
    api = Dynamic(daemon)
    listed = api.unary("ListModels")
    assert [m.id for m in listed.models] == ["tiny"]
    assert listed.models[0].name == "Tiny"
    assert api.enum_name("llama_router.v1.ModelState", listed.models[0].state) == "MODEL_STATE_DISCOVERED"

    progress = api.stream("LoadModel", id="tiny")
    last = progress[-1]
    assert api.enum_name("llama_router.v1.LoadProgress.Phase", last.phase) == "PHASE_READY"
    assert api.enum_name("llama_router.v1.ModelState", last.model.state) == "MODEL_STATE_READY"

    status = api.unary("GetStatus")
    assert status.models_by_state["ready"] == 1

    with pytest.raises(grpc.RpcError) as err:
        api.unary("GetModel", id="no-such-model")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in err.value.details()
