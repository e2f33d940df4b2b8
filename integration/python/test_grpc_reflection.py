"""A Python gRPC client that knows nothing but server reflection.

No .proto and no generated stubs: the client learns ModelService from the
daemon itself, as grpcurl or any dynamic client would, then calls it.
"""

import grpc
import numpy as np
import pytest
from conftest import Dynamic, running_daemon
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
    with running_daemon(router_bin, models, tmp_path) as channel:
        yield channel


def test_services_are_discoverable(daemon):
    services = set(ProtoReflectionDescriptorDatabase(daemon).get_services())
    assert {SERVICE, "grpc.health.v1.Health"} <= services


def test_list_load_and_errors_through_reflection_only(daemon):
    api = Dynamic(daemon, SERVICE)
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
