//! Reader tests over files written by [`super::writer`], one per check and error path.

#![allow(clippy::arithmetic_side_effects)]

use std::path::Path;

use super::writer::{GgufWriter, TensorSpec};
use super::*;

fn parse(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
    parse_slice(bytes, Path::new("test.gguf"))
}

/// The problem and offset a file is refused with; fails the test if it parses.
fn refused(bytes: &[u8]) -> (u64, Problem) {
    match parse(bytes) {
        Err(GgufError::Format {
            offset, problem, ..
        }) => (offset, problem),
        other => panic!("expected a format error, got {other:?}"),
    }
}

fn one_tensor(spec: TensorSpec) -> Vec<u8> {
    GgufWriter::new().raw_tensor(spec).to_bytes()
}

fn spec(name: &str, dims: &[u64], ty: GgmlType) -> TensorSpec {
    let elements = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .unwrap_or(0);
    TensorSpec {
        name: name.as_bytes().to_vec(),
        dims: dims.to_vec(),
        type_id: ty as u32,
        offset: None,
        data_len: (elements / ty.block_size()).saturating_mul(ty.type_size()),
    }
}

fn every_value() -> Vec<(&'static str, Value)> {
    vec![
        ("u8", Value::U8(200)),
        ("i8", Value::I8(-100)),
        ("u16", Value::U16(60000)),
        ("i16", Value::I16(-30000)),
        ("u32", Value::U32(4_000_000_000)),
        ("i32", Value::I32(-2_000_000_000)),
        ("f32", Value::F32(1.5e-7)),
        ("bool", Value::Bool(true)),
        ("string", Value::String("héllo ✓".into())),
        ("u64", Value::U64(u64::MAX)),
        ("i64", Value::I64(i64::MIN)),
        ("f64", Value::F64(-2.5e300)),
        ("arr.u8", Value::Array(Array::U8(vec![0, 1, 255]))),
        ("arr.i8", Value::Array(Array::I8(vec![-128, 127]))),
        ("arr.u16", Value::Array(Array::U16(vec![1, 65535]))),
        ("arr.i16", Value::Array(Array::I16(vec![-1, 1]))),
        ("arr.u32", Value::Array(Array::U32(vec![7]))),
        ("arr.i32", Value::Array(Array::I32(vec![-7, 0, 7]))),
        ("arr.f32", Value::Array(Array::F32(vec![0.25, -1.0]))),
        ("arr.bool", Value::Array(Array::Bool(vec![true, false]))),
        (
            "arr.string",
            Value::Array(Array::String(vec!["a", ""].into())),
        ),
        ("arr.u64", Value::Array(Array::U64(vec![u64::MAX]))),
        ("arr.i64", Value::Array(Array::I64(vec![i64::MAX, -1]))),
        ("arr.f64", Value::Array(Array::F64(vec![1e-300]))),
        ("arr.empty.u32", Value::Array(Array::U32(vec![]))),
        (
            "arr.empty.string",
            Value::Array(Array::String(Default::default())),
        ),
        ("arr.empty.array", Value::Array(Array::Array(vec![]))),
        (
            "arr.nested",
            Value::Array(Array::Array(vec![
                Array::Array(vec![
                    Array::String(vec!["deep"].into()),
                    Array::Bool(vec![]),
                ]),
                Array::U8(vec![1, 2]),
            ])),
        ),
    ]
}

#[test]
fn every_value_type_round_trips() {
    let mut w = GgufWriter::new();
    for (k, v) in every_value() {
        w = w.kv(k, v);
    }
    let header = parse(&w.to_bytes()).unwrap();
    let got: Vec<(&str, &Value)> = header.metadata.iter().collect();
    let want = every_value();
    assert_eq!(got.len(), want.len());
    for ((gk, gv), (wk, wv)) in got.into_iter().zip(&want) {
        assert_eq!((gk, gv), (*wk, wv));
    }
    let types: std::collections::HashSet<ValueType> =
        want.iter().map(|(_, v)| v.value_type()).collect();
    assert_eq!(types.len(), 13, "the fixture must cover all 13 value types");
}

#[test]
fn version_2_is_read_and_1_and_4_are_refused_by_number() {
    let v2 = GgufWriter::new()
        .version(2)
        .kv("a", Value::U8(1))
        .to_bytes();
    assert_eq!(parse(&v2).unwrap().version, 2);
    assert_eq!(
        refused(&GgufWriter::new().version(1).to_bytes()),
        (4, Problem::UnsupportedVersion(1))
    );
    let (_, p) = refused(&GgufWriter::new().version(4).to_bytes());
    assert!(p.to_string().contains("version 4"), "{p}");
}

#[test]
fn big_endian_file_is_named_as_such() {
    let bytes = GgufWriter::new().version(3u32.swap_bytes()).to_bytes();
    let (offset, problem) = refused(&bytes);
    assert_eq!((offset, problem.clone()), (4, Problem::BigEndian(3)));
    assert!(problem.to_string().contains("big-endian"));
}

#[test]
fn wrong_magic_is_not_gguf() {
    let mut bytes = GgufWriter::new().to_bytes();
    bytes[..4].copy_from_slice(b"GGML");
    assert!(matches!(refused(&bytes), (0, Problem::NotGguf { .. })));
}

#[test]
fn every_truncation_of_a_valid_file_is_a_clean_error() {
    let bytes = GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv(
            "arr",
            Value::Array(Array::Array(vec![Array::I32(vec![1, 2])])),
        )
        .tensor("a", GgmlType::F32, &[4, 2])
        .tensor("b", GgmlType::Q8_0, &[32])
        .to_bytes();
    parse(&bytes).unwrap();
    for len in 0..bytes.len() {
        let err = parse(&bytes[..len]).expect_err("a truncated file must not parse");
        let p = err.problem().expect("format error");
        assert!(
            matches!(
                p,
                Problem::Truncated { .. }
                    | Problem::CountTooLarge { .. }
                    | Problem::TensorOutOfBounds { .. }
            ),
            "{len}: {err}"
        );
    }
}

fn patch_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn huge_counts_fail_fast_without_allocating() {
    let base = GgufWriter::new()
        .kv("k", Value::String("v".into()))
        .to_bytes();
    // Tensor infos start after the one entry: key (8 + 1), type (4), string (8 + 1).
    let infos_at = 24 + 9 + 4 + 9;
    for (field_at, count, checked_at) in [
        (8, 1u64 << 63, infos_at),
        (8, u64::MAX, infos_at),
        (16, 1 << 63, 24),
        (16, u64::MAX, 24),
    ] {
        let mut bytes = base.clone();
        patch_u64(&mut bytes, field_at, count);
        let (offset, p) = refused(&bytes);
        assert!(
            matches!(p, Problem::CountTooLarge { count: c, .. } if c == count),
            "{p}"
        );
        assert_eq!(offset, checked_at);
    }
    // The string's length prefix sits after the key (8 + 1 bytes) and type (4 bytes).
    let mut bytes = base.clone();
    patch_u64(&mut bytes, 24 + 9 + 4, 1 << 62);
    let (_, p) = refused(&bytes);
    assert!(
        matches!(p, Problem::Truncated { needed, .. } if needed == 1 << 62),
        "{p}"
    );
}

#[test]
fn huge_array_lengths_fail_fast() {
    let bytes = GgufWriter::new()
        .kv("a", Value::Array(Array::U64(vec![1])))
        .to_bytes();
    // key (8 + 1) + value type (4) + element type (4) → the u64 length.
    let at = 24 + 9 + 4 + 4;
    for len in [1u64 << 62, u64::MAX, 3] {
        let mut b = bytes.clone();
        patch_u64(&mut b, at, len);
        let (_, p) = refused(&b);
        assert!(matches!(p, Problem::CountTooLarge { .. }), "{len}: {p}");
    }
}

#[test]
fn unknown_value_type_and_bad_bool_are_refused() {
    let mut bytes = GgufWriter::new().kv("k", Value::U8(1)).to_bytes();
    bytes[24 + 9..24 + 13].copy_from_slice(&13u32.to_le_bytes());
    assert_eq!(refused(&bytes), (33, Problem::UnknownValueType(13)));

    let mut bytes = GgufWriter::new().kv("k", Value::Bool(true)).to_bytes();
    bytes[24 + 13] = 2;
    assert_eq!(refused(&bytes), (37, Problem::InvalidBool(2)));

    let mut bytes = GgufWriter::new()
        .kv("k", Value::Array(Array::Bool(vec![false, true])))
        .to_bytes();
    let last = 24 + 13 + 12 + 1;
    bytes[last] = 7;
    assert_eq!(refused(&bytes), (last as u64, Problem::InvalidBool(7)));
}

/// A file whose one key holds `depth` arrays nested in each other, built as raw bytes.
fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut bytes = GgufWriter::new().to_bytes();
    bytes.truncate(24); // drop the data-section padding
    bytes[16..24].copy_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&4u64.to_le_bytes());
    bytes.extend_from_slice(b"deep");
    bytes.extend_from_slice(&(ValueType::Array as u32).to_le_bytes());
    for _ in 1..depth {
        bytes.extend_from_slice(&(ValueType::Array as u32).to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
    }
    bytes.extend_from_slice(&(ValueType::U8 as u32).to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.push(7);
    bytes
}

#[test]
fn array_nesting_is_bounded() {
    let h = parse(&nested_arrays(MAX_ARRAY_DEPTH)).unwrap();
    let mut a = h.metadata.get("deep").and_then(Value::as_array).unwrap();
    for _ in 1..MAX_ARRAY_DEPTH {
        let Array::Array(inner) = a else {
            panic!("{a:?}")
        };
        a = &inner[0];
    }
    assert_eq!(a, &Array::U8(vec![7]));
    let (_, p) = refused(&nested_arrays(MAX_ARRAY_DEPTH + 1));
    assert_eq!(
        p,
        Problem::ArrayTooDeep {
            limit: MAX_ARRAY_DEPTH
        }
    );
    // Far deeper than the limit: still an error, not a stack overflow.
    assert!(matches!(
        refused(&nested_arrays(1_000_000)).1,
        Problem::ArrayTooDeep { .. }
    ));
}

#[test]
fn keys_must_be_non_empty_unique_utf8() {
    let empty = GgufWriter::new().raw_kv(b"", Value::U8(0)).to_bytes();
    assert_eq!(refused(&empty), (24, Problem::EmptyKey));
    let bad = GgufWriter::new()
        .raw_kv(b"\xff\xfe", Value::U8(0))
        .to_bytes();
    assert_eq!(refused(&bad), (24, Problem::KeyNotUtf8));
    let dup = GgufWriter::new()
        .kv("a", Value::U8(0))
        .kv("a", Value::U8(1))
        .to_bytes();
    assert_eq!(refused(&dup), (24 + 14, Problem::DuplicateKey("a".into())));
}

#[test]
fn string_values_that_are_not_utf8_are_kept_lossily() {
    let mut bytes = GgufWriter::new()
        .kv("s", Value::String("ab".into()))
        .to_bytes();
    // key (8 + 1), type (4), length (8): the string's first byte.
    bytes[24 + 9 + 4 + 8] = 0xff;
    let h = parse(&bytes).unwrap();
    assert_eq!(h.metadata.get_str("s"), Some("\u{fffd}b"));
}

#[test]
fn alignment_defaults_to_32_and_is_honoured() {
    let h = parse(
        &GgufWriter::new()
            .tensor("t", GgmlType::F32, &[3])
            .to_bytes(),
    )
    .unwrap();
    assert_eq!(h.alignment, 32);
    assert_eq!(h.data_offset % 32, 0);
    let bytes = GgufWriter::new()
        .kv(KEY_ALIGNMENT, Value::U32(256))
        .tensor("t", GgmlType::F32, &[3])
        .tensor("u", GgmlType::F32, &[3])
        .to_bytes();
    let h = parse(&bytes).unwrap();
    assert_eq!(h.alignment, 256);
    assert_eq!(h.data_offset % 256, 0);
    assert_eq!(h.tensors[1].offset, h.data_offset + 256);
}

#[test]
fn alignment_must_be_a_u32_power_of_two() {
    for a in [0u32, 3, 48] {
        let bytes = GgufWriter::new()
            .kv(KEY_ALIGNMENT, Value::U32(a))
            .to_bytes();
        assert_eq!(refused(&bytes), (24, Problem::BadAlignment(a.into())));
    }
    let bytes = GgufWriter::new()
        .kv(KEY_ALIGNMENT, Value::U64(32))
        .to_bytes();
    assert!(matches!(refused(&bytes).1, Problem::WrongKeyType { .. }));
}

#[test]
fn tensor_names_are_checked() {
    let named = |name: &[u8]| {
        one_tensor(TensorSpec {
            name: name.to_vec(),
            ..spec("x", &[4], GgmlType::F32)
        })
    };
    assert_eq!(refused(&named(b"")), (24, Problem::EmptyTensorName));
    assert_eq!(refused(&named(b"a\xffb")), (24, Problem::TensorNameNotUtf8));
    let max = "n".repeat(MAX_TENSOR_NAME_BYTES);
    assert_eq!(parse(&named(max.as_bytes())).unwrap().tensors[0].name, max);
    let long = "n".repeat(MAX_TENSOR_NAME_BYTES + 1);
    assert!(matches!(
        refused(&named(long.as_bytes())).1,
        Problem::TensorNameTooLong {
            len: 65,
            limit: 64,
            ..
        }
    ));
    let dup = GgufWriter::new()
        .tensor("w", GgmlType::F32, &[4])
        .tensor("w", GgmlType::F32, &[4])
        .to_bytes();
    assert!(matches!(refused(&dup).1, Problem::DuplicateTensor(n) if n == "w"));
}

#[test]
fn tensor_shapes_are_checked() {
    let five = one_tensor(spec("t", &[1, 1, 1, 1, 1], GgmlType::F32));
    assert!(matches!(
        refused(&five).1,
        Problem::TooManyDims { n_dims: 5, .. }
    ));
    let zero = one_tensor(TensorSpec {
        data_len: 0,
        ..spec("t", &[4, 0], GgmlType::F32)
    });
    assert!(matches!(refused(&zero).1, Problem::ZeroDim { axis: 1, .. }));
    let overflow = one_tensor(TensorSpec {
        data_len: 0,
        ..spec("t", &[1 << 32, 1 << 32], GgmlType::I8)
    });
    assert!(matches!(
        refused(&overflow).1,
        Problem::ElementCountOverflow { .. }
    ));
    let too_big = one_tensor(TensorSpec {
        data_len: 0,
        ..spec("t", &[1 << 40, 1 << 22], GgmlType::F64)
    });
    assert!(matches!(
        refused(&too_big).1,
        Problem::ByteSizeOverflow { .. }
    ));
    let ragged = one_tensor(TensorSpec {
        data_len: 1024,
        ..spec("t", &[100, 2], GgmlType::Q4_K)
    });
    assert!(matches!(
        refused(&ragged).1,
        Problem::RowNotBlockMultiple {
            ne0: 100,
            block_size: 256,
            ..
        }
    ));
    // A scalar (no dimensions) is one element, as in llama.cpp.
    let scalar = one_tensor(spec("s", &[], GgmlType::F32));
    assert_eq!(parse(&scalar).unwrap().tensors[0].size, 4);
}

#[test]
fn removed_and_unknown_types_are_refused_by_id() {
    for (id, name) in [(4, "Q4_2"), (5, "Q4_3"), (31, "Q4_0_4_4")] {
        let bytes = one_tensor(TensorSpec {
            type_id: id,
            ..spec("t", &[32], GgmlType::F32)
        });
        let (_, p) = refused(&bytes);
        assert!(matches!(p, Problem::RemovedType { type_name, .. } if type_name == name));
    }
    let bytes = one_tensor(TensorSpec {
        type_id: 42,
        ..spec("t", &[32], GgmlType::F32)
    });
    assert!(matches!(
        refused(&bytes).1,
        Problem::UnknownType { id: 42, .. }
    ));
}

#[test]
fn every_ggml_type_gets_its_size() {
    let mut w = GgufWriter::new();
    for ty in GgmlType::ALL {
        w = w.tensor(ty.name(), *ty, &[ty.block_size() * 2, 3]);
    }
    let h = parse(&w.to_bytes()).unwrap();
    for (t, ty) in h.tensors.iter().zip(GgmlType::ALL) {
        assert_eq!(t.ggml_type, *ty);
        assert_eq!(t.size, ty.type_size() * 2 * 3, "{ty}");
        assert_eq!(t.n_elements, ty.block_size() * 6);
    }
}

#[test]
fn tensor_offsets_are_checked() {
    let misaligned = one_tensor(TensorSpec {
        offset: Some(4),
        ..spec("t", &[4], GgmlType::F32)
    });
    assert!(matches!(
        refused(&misaligned).1,
        Problem::MisalignedTensor {
            offset: 4,
            alignment: 32,
            ..
        }
    ));
    let mut past_end = one_tensor(spec("t", &[8], GgmlType::F32));
    past_end.truncate(past_end.len() - 1);
    assert!(matches!(
        refused(&past_end).1,
        Problem::TensorOutOfBounds { .. }
    ));
    let wraps = one_tensor(TensorSpec {
        offset: Some(u64::MAX - 31),
        data_len: 0,
        ..spec("t", &[8], GgmlType::F32)
    });
    assert!(matches!(
        refused(&wraps).1,
        Problem::TensorOutOfBounds { .. }
    ));
    let overlap = GgufWriter::new()
        .tensor("a", GgmlType::F32, &[64])
        .raw_tensor(TensorSpec {
            offset: Some(128),
            ..spec("b", &[8], GgmlType::F32)
        })
        .to_bytes();
    let (_, p) = refused(&overlap);
    assert_eq!(
        p,
        Problem::TensorOverlap {
            name: "b".into(),
            other: "a".into()
        }
    );
}

#[test]
fn tensor_infos_report_absolute_offsets_and_sizes() {
    let bytes = GgufWriter::new()
        .tensor("a", GgmlType::F16, &[10, 3])
        .tensor("b", GgmlType::Q4_0, &[64, 2])
        .to_bytes();
    let h = parse(&bytes).unwrap();
    assert_eq!(h.tensors[0].offset, h.data_offset);
    assert_eq!(h.tensors[0].size, 60);
    assert_eq!(h.tensors[1].offset, h.data_offset + 64);
    assert_eq!(h.tensors[1].size, 4 * 18);
    assert_eq!(h.tensors[1].dims, vec![64, 2]);
}

#[test]
fn header_only_read_matches_a_full_parse_and_grows_past_the_first_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big-header.gguf");
    // ~1.3 MiB of strings: more than the first read.
    let tokens: Vec<String> = (0..100_000).map(|i| format!("token-{i}")).collect();
    let w = GgufWriter::new()
        .kv(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(tokens.into())),
        )
        .tensor("t", GgmlType::F32, &[16]);
    w.write(&path).unwrap();
    let from_file = read_header(&path).unwrap();
    assert_eq!(from_file, parse(&w.to_bytes()).unwrap());
}

#[test]
fn header_only_read_refuses_a_value_past_the_caps_before_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.gguf");
    let mut bytes = GgufWriter::new()
        .kv("s", Value::String("x".into()))
        .to_bytes();
    patch_u64(&mut bytes, 24 + 9 + 4, MAX_HEADER_BYTES + 1);
    std::fs::write(&path, &bytes).unwrap();
    // Sparse: the file is long enough to hold the string, without using the disk.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(MAX_HEADER_BYTES * 2).unwrap();
    // The metadata caps refuse the string from its declared length, long
    // before the header bound would.
    let err = read_header(&path).unwrap_err();
    assert!(
        matches!(err.problem(), Some(Problem::ValueTooLarge { .. })),
        "{err}"
    );
}

#[test]
fn io_errors_name_the_file() {
    let err = read_header(Path::new("/nonexistent/model.gguf")).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/model.gguf: cannot read"),
        "{err}"
    );
}

#[test]
fn errors_name_file_offset_and_problem_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    std::fs::write(&path, GgufWriter::new().version(7).to_bytes()).unwrap();
    let msg = read_header(&path).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: at byte 4: GGUF version 7 is not supported (versions 2 and 3 are)",
            path.display()
        )
    );
    assert!(!msg.contains('\n'));
}

#[test]
fn mapped_file_addresses_tensor_bytes_without_copying() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let w = GgufWriter::new()
        .tensor("a", GgmlType::F32, &[8])
        .tensor("b", GgmlType::I8, &[5]);
    w.write(&path).unwrap();
    let mapped = MappedFile::open(&path).unwrap();
    let b = mapped.tensor_data(1).unwrap();
    assert_eq!(b, &[0, 1, 2, 3, 4]);
    assert_eq!(mapped.tensor_data(0).unwrap().len(), 32);
    assert!(mapped.tensor_data(2).is_none());
}

mod caps;
mod props;
mod split;
mod summary;
