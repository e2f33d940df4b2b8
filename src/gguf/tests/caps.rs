//! The metadata caps: real tokenizers pass, hostile values are refused from
//! their declared length, before their bytes are read.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use super::super::cursor::Stop;
use super::super::header::{header_extent, parse_prefix};
use super::super::writer::GgufWriter;
use super::super::*;

fn caps(value: u64, total: u64) -> HeaderLimits {
    HeaderLimits {
        max_value_bytes: value,
        max_metadata_bytes: total,
    }
}

/// The problem `bytes` are refused with under `caps`, by the walk and by the parse alike.
fn refused_with(bytes: &[u8], caps: &HeaderLimits) -> Problem {
    let len = bytes.len() as u64;
    let walked = match header_extent(bytes, len, caps) {
        Err(Stop::Bad { problem, .. }) => problem,
        other => panic!("the walk accepted it: {other:?}"),
    };
    let parsed = match parse_prefix(bytes, len, caps, Decode::All, &[]) {
        Err(Stop::Bad { problem, .. }) => problem,
        Err(other) => panic!("the parse stopped with {other:?}"),
        Ok(_) => panic!("the parse accepted it"),
    };
    assert_eq!(walked, parsed);
    parsed
}

#[test]
fn default_caps_admit_a_262k_token_vocabulary_and_an_embedded_tokenizer_json() {
    let tokens: Vec<String> = (0..262_144).map(|i| format!("▁token{i}")).collect();
    let bytes = GgufWriter::new()
        .kv("general.architecture", Value::String("gemma3".into()))
        .kv(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(tokens.into())),
        )
        .kv(
            "tokenizer.ggml.scores",
            Value::Array(Array::F32(vec![0.0; 262_144])),
        )
        .kv(
            "tokenizer.ggml.token_type",
            Value::Array(Array::I32(vec![1; 262_144])),
        )
        // Gemma's tokenizer.json is 33 MiB; some converters store it whole.
        .kv(
            "tokenizer.huggingface.json",
            Value::String("x".repeat(40 << 20)),
        )
        .tensor("t", GgmlType::F32, &[32])
        .to_bytes();
    let h = parse_slice(&bytes, Path::new("real.gguf")).unwrap();
    assert_eq!(h.metadata.len(), 5);
}

#[test]
fn a_string_past_the_value_cap_is_refused_naming_key_size_limit_and_config_key() {
    let bytes = GgufWriter::new()
        .kv("general.name", Value::String("n".repeat(5000)))
        .to_bytes();
    let problem = refused_with(&bytes, &caps(4096, 1 << 20));
    assert_eq!(
        problem,
        Problem::ValueTooLarge {
            key: "general.name".into(),
            // The value as the file stores it: length prefix and bytes.
            size: 5008,
            limit: 4096
        }
    );
    let text = problem.to_string();
    assert!(text.contains("max_metadata_value_bytes"), "{text}");
}

#[test]
fn the_cap_is_decided_from_the_declared_length_without_the_bytes() {
    // Only the first bytes of a file that declares a 250 MB string.
    let mut bytes = GgufWriter::new()
        .kv("general.name", Value::String(String::new()))
        .to_bytes();
    let len_at = 24 + 8 + "general.name".len() + 4;
    bytes[len_at..len_at + 8].copy_from_slice(&250_000_000u64.to_le_bytes());
    let file_len = 300_000_000;
    match header_extent(&bytes, file_len, &HeaderLimits::default()) {
        Err(Stop::Bad {
            problem: Problem::ValueTooLarge { size, .. },
            ..
        }) => assert_eq!(size, 8 + 250_000_000),
        other => panic!("expected the cap, got {other:?}"),
    }
}

#[test]
fn a_huge_string_in_a_sparse_file_is_refused_by_the_header_only_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.gguf");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"GGUF").unwrap();
    f.write_all(&3u32.to_le_bytes()).unwrap();
    f.write_all(&0u64.to_le_bytes()).unwrap();
    f.write_all(&1u64.to_le_bytes()).unwrap();
    f.write_all(&12u64.to_le_bytes()).unwrap();
    f.write_all(b"general.name").unwrap();
    f.write_all(&8u32.to_le_bytes()).unwrap();
    f.write_all(&250_000_000u64.to_le_bytes()).unwrap();
    // The string's bytes are a hole: zeros, no disk.
    f.seek(SeekFrom::Current(250_000_000)).unwrap();
    f.write_all(&[0]).unwrap();
    drop(f);
    let err = read_header(&path).unwrap_err();
    assert!(
        matches!(err.problem(), Some(Problem::ValueTooLarge { limit, .. }) if *limit == DEFAULT_MAX_VALUE_BYTES),
        "{err}"
    );
}

#[test]
fn a_string_array_is_one_value_and_counted_as_it_is_walked() {
    let strings: Vec<String> = (0..100).map(|i| format!("{i:0>100}")).collect();
    let bytes = GgufWriter::new()
        .kv("small", Value::U32(1))
        .kv(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(strings.into())),
        )
        .to_bytes();
    let problem = refused_with(&bytes, &caps(5000, 1 << 20));
    assert!(
        matches!(&problem, Problem::ValueTooLarge { key, size, limit: 5000 } if key == "tokenizer.ggml.tokens" && *size > 5000),
        "{problem}"
    );
    // Under a roomier cap the same file is fine.
    let len = bytes.len() as u64;
    assert!(parse_prefix(&bytes, len, &caps(20_000, 1 << 20), Decode::All, &[]).is_ok());
}

#[test]
fn an_array_of_empty_arrays_is_counted_before_it_is_walked() {
    let inner: Vec<Array> = (0..1000).map(|_| Array::U8(Vec::new())).collect();
    let bytes = GgufWriter::new()
        .kv("nested", Value::Array(Array::Array(inner)))
        .to_bytes();
    let problem = refused_with(&bytes, &caps(1000, 1 << 20));
    assert!(
        matches!(problem, Problem::ValueTooLarge { size, .. } if size >= 12_000),
        "{problem}"
    );
}

#[test]
fn values_under_the_value_cap_are_refused_together_past_the_total() {
    let mut w = GgufWriter::new();
    for i in 0..10 {
        w = w.kv(&format!("blob.{i}"), Value::String("b".repeat(1000)));
    }
    let bytes = w.to_bytes();
    let problem = refused_with(&bytes, &caps(2000, 5000));
    assert!(
        matches!(&problem, Problem::MetadataTooLarge { key, limit: 5000, .. } if key == "blob.4"),
        "{problem}"
    );
    assert!(problem.to_string().contains("max_metadata_bytes"));
}

#[test]
fn keys_past_the_spec_limit_are_refused() {
    let bytes = GgufWriter::new()
        .raw_kv(&vec![b'k'; 70_000], Value::U8(1))
        .to_bytes();
    let problem = refused_with(&bytes, &HeaderLimits::default());
    assert_eq!(
        problem,
        Problem::KeyTooLong {
            len: 70_000,
            limit: MAX_KEY_BYTES
        }
    );
}

#[test]
fn error_messages_quote_a_long_key_cut_short() {
    let key = "k".repeat(10_000);
    let bytes = GgufWriter::new()
        .kv(&key, Value::String("v".repeat(100)))
        .to_bytes();
    let text = refused_with(&bytes, &caps(50, 1 << 20)).to_string();
    assert!(text.len() < 300, "{text}");
}

#[test]
fn summary_text_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long-name.gguf");
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("general.name", Value::String("é".repeat(10_000)))
        .kv("llama.context_length", Value::U32(2048))
        .tensor("t", GgmlType::F32, &[32])
        .write(&path)
        .unwrap();
    let s = ModelSummary::of(&GgufModel::open(&path).unwrap());
    let name = s.name.unwrap();
    assert!(name.len() <= MAX_SUMMARY_TEXT_BYTES, "{}", name.len());
    assert!(name.ends_with("...") && name.starts_with("éé"));
    assert_eq!(s.architecture.as_deref(), Some("llama"));
    assert_eq!(s.context_length, Some(2048));
}
