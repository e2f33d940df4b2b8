//! Property tests: written values read back, and no input makes the parser panic.

use proptest::prelude::*;

use super::super::header::parse_prefix;
use super::super::writer::GgufWriter;
use super::super::*;
use super::parse;
use super::summary::{walk_at_once, walk_in_steps};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        prop::num::f32::NORMAL.prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        ".{0,12}".prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        prop::num::f64::NORMAL.prop_map(Value::F64),
    ]
}

fn array() -> impl Strategy<Value = Array> {
    let leaf = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Array::U8),
        prop::collection::vec(any::<i16>(), 0..8).prop_map(Array::I16),
        prop::collection::vec(any::<u32>(), 0..8).prop_map(Array::U32),
        prop::collection::vec(prop::num::f32::NORMAL, 0..8).prop_map(Array::F32),
        prop::collection::vec(any::<bool>(), 0..8).prop_map(Array::Bool),
        prop::collection::vec(".{0,6}", 0..6).prop_map(|v| Array::String(v.into())),
        prop::collection::vec(any::<i64>(), 0..4).prop_map(Array::I64),
        prop::collection::vec(prop::num::f64::NORMAL, 0..4).prop_map(Array::F64),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Array::Array)
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![3 => scalar(), 1 => array().prop_map(Value::Array)]
}

/// A valid file with a few keys and tensors, to mutate.
fn seed_file() -> Vec<u8> {
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("general.alignment", Value::U32(64))
        .kv(
            "t",
            Value::Array(Array::Array(vec![Array::String(vec!["x"].into())])),
        )
        .kv("f", Value::F32(0.5))
        .tensor("a", GgmlType::Q4_0, &[32, 2])
        .tensor("b", GgmlType::F16, &[3])
        .to_bytes()
}

/// A file of `entries`, the first of each key kept, and what it holds.
fn written(entries: Vec<(String, Value)>) -> (indexmap::IndexMap<String, Value>, Vec<u8>) {
    let mut unique = indexmap::IndexMap::new();
    for (k, v) in entries {
        unique.entry(k).or_insert(v);
    }
    let mut w = GgufWriter::new();
    for (k, v) in &unique {
        w = w.kv(k, v.clone());
    }
    (unique, w.to_bytes())
}

/// An error must be a format error at an offset inside the file.
fn assert_clean(bytes: &[u8]) {
    if let Err(e) = parse(bytes) {
        match e {
            GgufError::Format { offset, .. } => assert!(offset <= bytes.len() as u64, "{e}"),
            other => panic!("unexpected error kind: {other}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn written_metadata_reads_back(entries in prop::collection::vec(("[a-z.]{1,12}", value()), 0..8)) {
        let (unique, bytes) = written(entries);
        let header = parse(&bytes).unwrap();
        let got: Vec<(String, Value)> = header.metadata.iter().map(|(k, v)| (k.to_owned(), v.clone())).collect();
        let want: Vec<(String, Value)> = unique.into_iter().collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn a_resumed_walk_agrees_with_one_walk_on_mutated_files(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        step in 1usize..48,
    ) {
        let mut bytes = seed_file();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let once = format!("{:?}", walk_at_once(&bytes));
        prop_assert_eq!(format!("{:?}", walk_in_steps(&bytes, step)), once);
    }

    #[test]
    fn a_summary_parse_of_small_arrays_is_a_full_parse(entries in prop::collection::vec(("[a-z.]{1,12}", value()), 0..8)) {
        let (_, bytes) = written(entries);
        let (_, ends) = walk_at_once(&bytes).unwrap();
        let caps = HeaderLimits::default();
        let len = bytes.len() as u64;
        let summary = parse_prefix(&bytes, len, &caps, Decode::Summary, &ends).ok();
        prop_assert_eq!(summary, parse_prefix(&bytes, len, &caps, Decode::All, &[]).ok());
    }

    #[test]
    fn mutated_files_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = seed_file();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        assert_clean(&bytes);
    }

    #[test]
    fn mutated_counts_and_lengths_never_panic(at in any::<prop::sample::Index>(), value in prop_oneof![
        Just(u64::MAX), Just(1u64 << 63), Just(1u64 << 32), any::<u64>(), 0u64..64,
    ]) {
        // Overwrite 8 bytes anywhere with a length-like value.
        let mut bytes = seed_file();
        let i = at.index(bytes.len() - 8);
        bytes[i..i + 8].copy_from_slice(&value.to_le_bytes());
        assert_clean(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_preamble_never_panic(tail in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = b"GGUF\x03\0\0\0".to_vec();
        bytes.extend(tail);
        assert_clean(&bytes);
    }
}
