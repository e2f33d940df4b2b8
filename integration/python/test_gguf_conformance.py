"""Our GGUF reader against the reference one: gguf-py's GGUFReader (from llama.cpp).

Every file here is written by gguf-py's GGUFWriter (or is the real demo
model); `llama-router inspect --json` must report exactly what GGUFReader reads.
"""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.constants import GGUFEndian


def decode_parts(parts, i, vtype):
    """Rebuilds a (possibly nested) value from GGUFReader's flat `parts` list."""
    vtype = GGUFValueType(int(vtype))
    if vtype == GGUFValueType.STRING:
        return bytes(parts[i + 1]).decode("utf-8"), i + 2
    if vtype == GGUFValueType.ARRAY:
        itype, count = int(parts[i][0]), int(parts[i + 1][0])
        i += 2
        items = []
        for _ in range(count):
            item, i = decode_parts(parts, i, itype)
            items.append(item)
        return items, i
    return parts[i][0].item(), i + 1


def reference(paths: list[Path]) -> dict:
    """What GGUFReader sees, shaped like our --json output (minus the summary)."""
    readers = [GGUFReader(p) for p in paths]
    metadata = {}
    for name, field in readers[0].fields.items():
        if name.startswith("GGUF."):
            continue  # the reader's pseudo-fields for the header counts
        # parts: key length, key bytes, value type, then the value's parts
        metadata[name], _ = decode_parts(field.parts, 3, field.parts[2][0])
    tensors = [
        {
            "name": t.name,
            "type": t.tensor_type.name,
            "dims": [int(d) for d in t.shape],
            "shard": shard,
            "offset": int(t.data_offset),
            "size": int(t.n_bytes),
        }
        for shard, r in enumerate(readers)
        for t in r.tensors
    ]
    return {
        "files": [str(p) for p in paths],
        "version": int(readers[0].fields["GGUF.version"].parts[0][0]),
        "metadata": metadata,
        "tensors": tensors,
    }


def ours(doc: dict) -> dict:
    return {k: doc[k] for k in ("files", "version", "metadata", "tensors")}


def quant_tensor(writer: GGUFWriter, name: str, qtype: GGMLQuantizationType, rows: int, blocks: int):
    """Adds a tensor of `qtype` as raw bytes (gguf-py writes any type this way)."""
    block, type_size = GGML_QUANT_SIZES[qtype]
    data = (np.arange(rows * blocks * type_size) % 251).astype(np.uint8).reshape(rows, blocks * type_size)
    writer.add_tensor(name, data, raw_dtype=qtype)


def write(path: Path, build, **kwargs) -> Path:
    writer = GGUFWriter(path, "llama", **kwargs)
    build(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def every_value_type(w: GGUFWriter):
    w.add_uint8("t.u8", 255)
    w.add_int8("t.i8", -128)
    w.add_uint16("t.u16", 65535)
    w.add_int16("t.i16", -32768)
    w.add_uint32("t.u32", 4294967295)
    w.add_int32("t.i32", -2147483648)
    w.add_float32("t.f32", 0.1)
    w.add_uint64("t.u64", 2**64 - 1)
    w.add_int64("t.i64", -(2**63))
    w.add_float64("t.f64", 1e-300)
    w.add_bool("t.bool", True)
    w.add_string("t.string", "héllo, wörld ✓")
    w.add_string("t.empty_string", "")
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_f32", [0.5, -1.25])
    w.add_array("t.arr_str", ["a", "", "ünïcode"])
    w.add_array("t.arr_bool", [True, False, True])
    w.add_array("t.arr_nested", [[1, 2], [3], [4, 5, 6]])
    w.add_array("t.arr_nested_str", [["x", "y"], ["z"]])
    w.add_array("t.arr_deep", [[[1.5]], [[2.5, 3.5]]])
    w.add_key_value("t.arr_u64", [2**64 - 1, 0], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT64)
    w.add_key_value("t.arr_i8", [-1, 1], GGUFValueType.ARRAY, sub_type=GGUFValueType.INT8)
    w.add_key_value("t.arr_f64", [1e300, -0.0], GGUFValueType.ARRAY, sub_type=GGUFValueType.FLOAT64)
    w.add_tensor("f32", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.add_tensor("f16", np.ones((2, 8), dtype=np.float16))
    w.add_tensor("i32", np.arange(5, dtype=np.int32))
    quant_tensor(w, "q8_0", GGMLQuantizationType.Q8_0, rows=2, blocks=3)
    quant_tensor(w, "q4_k", GGMLQuantizationType.Q4_K, rows=4, blocks=1)
    quant_tensor(w, "q6_k", GGMLQuantizationType.Q6_K, rows=1, blocks=2)


def test_every_value_type_and_several_tensor_types(tmp_path, inspect):
    path = write(tmp_path / "values.gguf", every_value_type)
    doc = inspect(path)
    assert ours(doc) == reference([path])
    types = {t["type"] for t in doc["tensors"]}
    assert types == {"F32", "F16", "I32", "Q8_0", "Q4_K", "Q6_K"}


def test_alignment_other_than_32(tmp_path, inspect):
    def build(w):
        w.data_alignment = 128
        w.add_uint32("general.alignment", 128)
        w.add_tensor("a", np.ones(3, dtype=np.float32))
        w.add_tensor("b", np.ones(5, dtype=np.float32))

    path = write(tmp_path / "aligned.gguf", build)
    doc = inspect(path)
    assert ours(doc) == reference([path])
    assert all(t["offset"] % 128 == 0 for t in doc["tensors"])


def test_whole_ggml_type_table_matches_gguf_py(tmp_path, inspect):
    """One tensor of every type gguf-py knows: names, block and type sizes must agree."""

    def build(w):
        for qtype in GGML_QUANT_SIZES:
            quant_tensor(w, f"t.{qtype.name}", qtype, rows=2, blocks=2)

    path = write(tmp_path / "types.gguf", build)
    doc = inspect(path)
    assert ours(doc) == reference([path])
    assert len(doc["tensors"]) == len(GGML_QUANT_SIZES)


def test_split_set_as_gguf_split_writes_it(tmp_path, inspect):
    def build(w):
        w.add_string("general.name", "split-test")
        w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
        for i in range(5):
            w.add_tensor(f"blk.{i}.weight", np.full((2, 4), i, dtype=np.float32))

    write(tmp_path / "model.gguf", build, split_max_tensors=2)
    shards = sorted(tmp_path.glob("model-*-of-00003.gguf"))
    assert [s.name for s in shards] == [f"model-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    # gguf-split layout: all metadata in shard 1, only split.* keys after it.
    later_keys = {k for k in GGUFReader(shards[1]).fields if not k.startswith("GGUF.")}
    assert later_keys == {"split.no", "split.count", "split.tensors.count"}
    want = reference(shards)
    for shard in shards:  # any shard opens the whole set
        doc = inspect(shard)
        assert ours(doc) == want
    assert [t["shard"] for t in want["tensors"]] == [0, 0, 1, 1, 2]
    assert doc["summary"]["shard_count"] == 3
    assert doc["summary"]["tensor_count"] == 5


def test_demo_model_matches_reference(demo_model, inspect):
    doc = inspect(demo_model)
    want = reference([demo_model])  # gguf-py takes ~20 s over the 262k-token vocabulary
    assert len(doc["tensors"]) == 236
    assert len(doc["metadata"]) == 33
    assert ours(doc) == want
    s = doc["summary"]
    assert s["architecture"] == "gemma3"
    assert s["file_type"] == "Q4_K_M"
    assert s["vocab_size"] == 262144
    assert s["context_length"] == 32768
    assert s["parameter_count"] == sum(int(np.prod(t["dims"])) for t in want["tensors"])
    assert s["total_bytes"] == demo_model.stat().st_size


def refused(router_bin, path: Path) -> str:
    proc = subprocess.run([router_bin, "inspect", "--json", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_truncated_demo_header_is_refused_cleanly(tmp_path, router_bin, demo_model):
    head = demo_model.read_bytes()[: 1 << 20]
    path = tmp_path / "truncated.gguf"
    path.write_bytes(head)
    assert f"{path}: at byte" in refused(router_bin, path)


def test_big_endian_file_is_refused_with_the_reason(tmp_path, router_bin):
    def build(w):
        w.add_uint32("x", 1)

    path = write(tmp_path / "be.gguf", build, endianess=GGUFEndian.BIG)
    GGUFReader(path)  # the reference reads it (byte-swapped) ...
    assert "big-endian" in refused(router_bin, path)  # ... we say why we don't


@pytest.mark.parametrize("content", [b"", b"GGUF", b"GGUF\x01\x00\x00\x00", b"\x00" * 64])
def test_garbage_is_refused(tmp_path, router_bin, content):
    path = tmp_path / "garbage.gguf"
    path.write_bytes(content)
    refused(router_bin, path)
