//! The resumable walk and summary reads: a walk that stops for bytes and goes
//! on ends where one walk does, and a summary read keeps a large array as its
//! type and length while reading every other value as a full read does.

use super::super::cursor::{Parse, Stop};
use super::super::extent::HeaderWalk;
use super::super::header::{header_extent, parse_prefix};
use super::super::writer::GgufWriter;
use super::super::*;

/// Walks `bytes` as a file whose bytes arrive `step` at a time; returns where
/// the header ends and where each entry does.
pub(super) fn walk_in_steps(bytes: &[u8], step: usize) -> Parse<(u64, Vec<u64>)> {
    let caps = HeaderLimits::default();
    let mut walk = HeaderWalk::default();
    let mut seen = step.min(bytes.len());
    loop {
        match walk.advance(&bytes[..seen], bytes.len() as u64, &caps) {
            Ok(end) => return Ok((end, walk.entry_ends().to_vec())),
            Err(Stop::NeedBytes(n)) if seen < bytes.len() => {
                assert!(n as usize > seen, "asked for {n} bytes with {seen} in hand");
                seen = (seen + step).min(bytes.len());
            }
            Err(stop) => return Err(stop),
        }
    }
}

/// One walk over all of `bytes`.
pub(super) fn walk_at_once(bytes: &[u8]) -> Parse<(u64, Vec<u64>)> {
    let caps = HeaderLimits::default();
    let mut walk = HeaderWalk::default();
    let end = walk.advance(bytes, bytes.len() as u64, &caps)?;
    Ok((end, walk.entry_ends().to_vec()))
}

fn vocabulary(n: usize) -> Array {
    Array::String((0..n).map(|i| format!("▁tok{i}")).collect())
}

/// A header with what real ones hold: a vocabulary, its scores and types,
/// per-layer counts, a large array of arrays, scalars and tensors.
fn tokenizer_file(tokens: usize) -> GgufWriter {
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("tokenizer.ggml.tokens", Value::Array(vocabulary(tokens)))
        .kv(
            "tokenizer.ggml.scores",
            Value::Array(Array::F32(vec![-1.5; tokens])),
        )
        .kv(
            "llama.attention.head_count",
            Value::Array(Array::U32(vec![8; 12])),
        )
        .kv(
            "nested",
            Value::Array(Array::Array(vec![Array::U8(vec![1, 2]); tokens])),
        )
        .kv("llama.block_count", Value::U32(12))
        .tensor("a", GgmlType::F32, &[32])
        .tensor("b", GgmlType::Q4_0, &[64, 2])
}

#[test]
fn a_walk_resumed_as_bytes_arrive_ends_where_one_walk_does() {
    let bytes = tokenizer_file(5000).to_bytes();
    let once = walk_at_once(&bytes).unwrap();
    assert_eq!(once.1.len(), 6);
    assert_eq!(
        once.0,
        header_extent(&bytes, bytes.len() as u64, &HeaderLimits::default()).unwrap()
    );
    // Steps that cut every kind of item: a length prefix, a string, a fixed array.
    for step in [1, 3, 8, 13, 4096, 100_000] {
        assert_eq!(walk_in_steps(&bytes, step).unwrap(), once, "step {step}");
    }
}

#[test]
fn a_resumed_walk_refuses_a_bad_file_as_one_walk_does() {
    let good = tokenizer_file(300).to_bytes();
    let mut deep = Vec::new();
    // Every truncation, and a corrupt byte in each region.
    let mut files: Vec<Vec<u8>> = (0..good.len())
        .step_by(97)
        .map(|n| good[..n].to_vec())
        .collect();
    for at in [10, 30, 60, 2000, good.len() - 40] {
        let mut bad = good.clone();
        bad[at] ^= 0xFF;
        files.push(bad);
    }
    deep.extend(files);
    for bytes in deep {
        let once = walk_at_once(&bytes);
        let stepped = walk_in_steps(&bytes, 7);
        match (&once, &stepped) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (
                Err(Stop::Bad {
                    offset: a,
                    problem: p,
                }),
                Err(Stop::Bad {
                    offset: b,
                    problem: q,
                }),
            ) => {
                assert_eq!((a, p), (b, q));
            }
            _ => panic!("one walk gave {once:?}, the resumed one {stepped:?}"),
        }
    }
}

#[test]
fn a_summary_read_keeps_large_arrays_as_type_and_length_and_the_rest_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tok.gguf");
    let tokens = SUMMARY_ARRAY_LEN as usize + 1;
    // Past the first read, so the read grows and the walk resumes.
    let w = tokenizer_file(tokens).kv(
        "tokenizer.huggingface.json",
        Value::String("x".repeat(3 << 20)),
    );
    w.write(&path).unwrap();
    let full = read_header(&path).unwrap();
    let summary = read_header_with(&path, &HeaderLimits::default(), Decode::Summary).unwrap();
    assert_eq!(summary.tensors, full.tensors);
    assert_eq!(summary.data_offset, full.data_offset);
    let unread = |element_type| {
        Value::Array(Array::Unread(UnreadArray {
            element_type,
            len: tokens as u64,
        }))
    };
    for (key, value) in full.metadata.iter() {
        let want = match key {
            "tokenizer.ggml.tokens" => unread(ValueType::String),
            "tokenizer.ggml.scores" => unread(ValueType::F32),
            "nested" => unread(ValueType::Array),
            _ => value.clone(),
        };
        assert_eq!(summary.metadata.get(key), Some(&want), "{key}");
    }
    assert_eq!(summary.metadata.len(), full.metadata.len());
    // What the catalog shows is the same either way.
    let model = GgufModel::open_with(&path, &HeaderLimits::default(), Decode::Summary).unwrap();
    assert_eq!(
        ModelSummary::of(&model),
        ModelSummary::of(&GgufModel::open(&path).unwrap())
    );
    assert_eq!(ModelSummary::of(&model).vocab_size, Some(tokens as u64));
}

#[test]
fn arrays_up_to_the_summary_length_are_decoded() {
    let bytes = tokenizer_file(SUMMARY_ARRAY_LEN as usize).to_bytes();
    let len = bytes.len() as u64;
    let (_, ends) = walk_at_once(&bytes).unwrap();
    let caps = HeaderLimits::default();
    let summary = parse_prefix(&bytes, len, &caps, Decode::Summary, &ends).unwrap();
    let full = parse_prefix(&bytes, len, &caps, Decode::All, &[]).unwrap();
    assert_eq!(summary, full);
}

#[test]
fn a_summary_read_still_refuses_what_a_full_read_refuses_in_structure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    let bytes = tokenizer_file(10_000).to_bytes();
    // Cut inside the vocabulary: a truncation, whatever is decoded.
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let err = read_header_with(&path, &HeaderLimits::default(), Decode::Summary).unwrap_err();
    assert!(
        matches!(err.problem(), Some(Problem::Truncated { .. })),
        "{err}"
    );
    assert_eq!(err.to_string(), read_header(&path).unwrap_err().to_string());
    // Unread strings are not checked for UTF-8 (a full read keeps them lossily).
    let mut w = GgufWriter::new();
    let bad: Vec<String> = vec!["zz".into(); 5000];
    w = w.kv(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(bad.into())),
    );
    let mut bytes = w.to_bytes();
    let at = bytes.windows(2).position(|p| p == b"zz").unwrap();
    bytes[at] = 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    let summary = read_header_with(&path, &HeaderLimits::default(), Decode::Summary).unwrap();
    let tokens = summary
        .metadata
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array);
    assert_eq!(tokens.map(Array::len), Some(5000));
}

#[test]
fn a_header_read_from_an_open_file_is_that_files_though_its_path_now_names_another() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let other = dir.path().join("other.gguf");
    // Same length, different tensor names: only the contents tell them apart.
    GgufWriter::new()
        .tensor("a", GgmlType::F32, &[32])
        .write(&path)
        .unwrap();
    GgufWriter::new()
        .tensor("b", GgmlType::F32, &[32])
        .write(&other)
        .unwrap();
    let file = std::fs::File::open(&path).unwrap();
    // The descriptor's position is not where the read starts.
    std::io::Read::read(&mut &file, &mut [0u8; 7]).unwrap();
    std::fs::rename(&other, &path).unwrap();
    let caps = HeaderLimits::default();
    let opened = read_header_of(&file, &path, &caps, Decode::Summary).unwrap();
    let by_path = read_header_with(&path, &caps, Decode::Summary).unwrap();
    assert_eq!(opened.tensors.first().map(|t| t.name.as_str()), Some("a"));
    assert_eq!(by_path.tensors.first().map(|t| t.name.as_str()), Some("b"));
}
