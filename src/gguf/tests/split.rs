//! Split sets resolved from any shard, and every inconsistency named.

use std::path::{Path, PathBuf};

use super::super::writer::GgufWriter;
use super::super::*;

/// The `split.*` values one shard carries; None leaves the key out.
struct SplitKeys {
    no: Option<Value>,
    count: Option<Value>,
    tensors: Option<Value>,
    /// Name of the first tensor (to force duplicates across shards).
    first_tensor: String,
}

/// The keys gguf-split writes for shard `i` of `count` (2 tensors per shard).
fn honest(i: u16, count: u16) -> SplitKeys {
    SplitKeys {
        no: Some(Value::U16(i)),
        count: Some(Value::U16(count)),
        tensors: Some(Value::I32(i32::from(count) * 2)),
        first_tensor: format!("blk.{i}.a"),
    }
}

/// Writes a set the way gguf-split does: metadata in shard 1, only `split.*` keys after.
fn write_set(dir: &Path, count: u16, keys: impl Fn(u16) -> SplitKeys) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let k = keys(i);
            let mut w = GgufWriter::new();
            if i == 0 {
                w = w.kv("general.architecture", Value::String("llama".into()));
            }
            for (key, value) in [
                (KEY_SPLIT_NO, k.no),
                (KEY_SPLIT_COUNT, k.count),
                (KEY_SPLIT_TENSORS_COUNT, k.tensors),
            ] {
                if let Some(v) = value {
                    w = w.kv(key, v);
                }
            }
            let w = w.tensor(&k.first_tensor, GgmlType::F32, &[8]).tensor(
                &format!("blk.{i}.b"),
                GgmlType::Q8_0,
                &[32, 2],
            );
            let path = dir.join(format!("m-{:05}-of-{count:05}.gguf", i + 1));
            w.write(&path).unwrap();
            path
        })
        .collect()
}

#[test]
fn split_names_parse_strictly() {
    let s = SplitName::parse(Path::new("/m/Qwen3-8B-00002-of-00003.gguf")).unwrap();
    assert_eq!(s.prefix, Path::new("/m/Qwen3-8B"));
    assert_eq!((s.index, s.count), (2, 3));
    assert_eq!(s.set_name(), "Qwen3-8B");
    assert_eq!(
        s.shard_path(1),
        Path::new("/m/Qwen3-8B-00001-of-00003.gguf")
    );
    for bad in [
        "m.gguf",
        "m-1-of-3.gguf",
        "m-00004-of-00003.gguf",
        "m-00000-of-00003.gguf",
        "-00001-of-00002.gguf",
        "m-00001-of-00002.bin",
    ] {
        assert_eq!(SplitName::parse(Path::new(bad)), None, "{bad}");
    }
}

#[test]
fn any_shard_opens_the_whole_set_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), 3, |i| honest(i, 3));
    for p in &paths {
        let model = GgufModel::open(p).unwrap();
        let files: Vec<&Path> = model.shards().map(|s| s.path.as_path()).collect();
        assert_eq!(
            files,
            paths.iter().map(PathBuf::as_path).collect::<Vec<_>>()
        );
        let tensors: Vec<(usize, &str)> =
            model.tensors().map(|(i, t)| (i, t.name.as_str())).collect();
        assert_eq!(tensors.len(), 6);
        assert_eq!(tensors[5], (2, "blk.2.b"));
        assert_eq!(
            model.metadata().get_str("general.architecture"),
            Some("llama")
        );
        assert_eq!(model.shard_count(), 3);
    }
}

#[test]
fn a_missing_shard_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), 3, |i| honest(i, 3));
    std::fs::remove_file(&paths[1]).unwrap();
    let err = GgufModel::open(&paths[2]).unwrap_err();
    match &err {
        GgufError::MissingShard {
            missing,
            index,
            count,
            ..
        } => {
            assert_eq!((missing, *index, *count), (&paths[1], 2, 3));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("m-00002-of-00003.gguf"), "{err}");
}

/// Opens a 3-shard set built with `keys` and returns the failing shard's file name and problem.
fn set_error(keys: impl Fn(u16) -> SplitKeys) -> (String, Problem) {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), 3, keys);
    match GgufModel::open(&paths[0]) {
        Err(GgufError::Format { path, problem, .. }) => (
            path.file_name().unwrap().to_string_lossy().into_owned(),
            problem,
        ),
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn wrong_split_no_names_the_shard() {
    let (file, p) = set_error(|i| SplitKeys {
        no: Some(Value::U16(if i == 1 { 2 } else { i })),
        ..honest(i, 3)
    });
    assert_eq!(file, "m-00002-of-00003.gguf");
    assert!(
        matches!(
            p,
            Problem::SplitKeyMismatch {
                key: KEY_SPLIT_NO,
                expected: 1,
                ..
            }
        ),
        "{p}"
    );
}

#[test]
fn disagreeing_shard_counts_are_refused() {
    let (file, p) = set_error(|i| SplitKeys {
        count: Some(Value::U16(if i == 2 { 4 } else { 3 })),
        ..honest(i, 3)
    });
    assert_eq!(file, "m-00003-of-00003.gguf");
    assert!(
        matches!(
            p,
            Problem::SplitKeyMismatch {
                key: KEY_SPLIT_COUNT,
                expected: 3,
                ..
            }
        ),
        "{p}"
    );
}

#[test]
fn missing_split_keys_are_refused() {
    let (file, p) = set_error(|i| SplitKeys {
        no: if i == 1 { None } else { Some(Value::U16(i)) },
        ..honest(i, 3)
    });
    assert_eq!(file, "m-00002-of-00003.gguf");
    assert_eq!(p, Problem::SplitKeyMissing { key: KEY_SPLIT_NO });
}

#[test]
fn wrong_total_tensor_count_is_refused() {
    let (file, p) = set_error(|i| SplitKeys {
        tensors: Some(Value::I32(5)),
        ..honest(i, 3)
    });
    assert_eq!(file, "m-00001-of-00003.gguf");
    assert!(
        matches!(
            p,
            Problem::SplitKeyMismatch {
                key: KEY_SPLIT_TENSORS_COUNT,
                expected: 6,
                ..
            }
        ),
        "{p}"
    );
}

#[test]
fn a_tensor_in_two_shards_is_refused() {
    let (file, p) = set_error(|i| SplitKeys {
        first_tensor: "shared.weight".into(),
        ..honest(i, 3)
    });
    assert_eq!(file, "m-00002-of-00003.gguf");
    assert!(
        matches!(&p, Problem::DuplicateTensorAcrossShards { name, other_shard }
            if name == "shared.weight" && other_shard.ends_with("m-00001-of-00003.gguf")),
        "{p}"
    );
}

#[test]
fn a_lone_file_claiming_to_be_a_shard_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("renamed.gguf");
    GgufWriter::new()
        .kv(KEY_SPLIT_NO, Value::U16(0))
        .kv(KEY_SPLIT_COUNT, Value::U16(3))
        .write(&path)
        .unwrap();
    let err = GgufModel::open(&path).unwrap_err();
    assert_eq!(
        err.problem(),
        Some(&Problem::SplitNameMismatch { index: 1, count: 3 })
    );
    // A one-shard "set" is just a model.
    let one = dir.path().join("solo-00001-of-00001.gguf");
    GgufWriter::new()
        .kv(KEY_SPLIT_NO, Value::U16(0))
        .kv(KEY_SPLIT_COUNT, Value::U16(1))
        .write(&one)
        .unwrap();
    assert_eq!(GgufModel::open(&one).unwrap().shard_count(), 1);
}

#[test]
fn summary_reads_metadata_and_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("general.name", Value::String("Tiny".into()))
        .kv("general.size_label", Value::String("1K".into()))
        .kv("general.file_type", Value::U32(15))
        .kv("llama.context_length", Value::U32(4096))
        .kv("llama.embedding_length", Value::U64(64))
        .kv("llama.block_count", Value::U32(2))
        .kv(
            "llama.attention.head_count",
            Value::Array(Array::I32(vec![4, 8])),
        )
        .kv("llama.attention.head_count_kv", Value::U32(2))
        .kv("tokenizer.ggml.model", Value::String("gpt2".into()))
        .kv(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(vec!["a", "b"].into())),
        )
        .kv("tokenizer.chat_template", Value::String("{{ x }}".into()))
        .tensor("tok", GgmlType::Q4_K, &[256, 4])
        .tensor("norm", GgmlType::F32, &[64])
        .write(&path)
        .unwrap();
    let model = GgufModel::open(&path).unwrap();
    let s = ModelSummary::of(&model);
    assert_eq!(s.architecture.as_deref(), Some("llama"));
    assert_eq!(s.name.as_deref(), Some("Tiny"));
    assert_eq!(s.size_label.as_deref(), Some("1K"));
    assert_eq!(s.parameter_count, 256 * 4 + 64);
    assert_eq!(s.file_type.as_deref(), Some("Q4_K_M"));
    assert_eq!(s.dominant_type.as_deref(), Some("Q4_K"));
    assert_eq!(s.context_length, Some(4096));
    assert_eq!(s.embedding_length, Some(64));
    assert_eq!(s.block_count, Some(2));
    assert_eq!(s.head_count, Some(8));
    assert_eq!(s.head_count_kv, Some(2));
    assert_eq!(s.tokenizer_model.as_deref(), Some("gpt2"));
    assert_eq!(s.vocab_size, Some(2));
    assert!(s.has_chat_template);
    assert_eq!(s.tensor_count, 2);
    assert_eq!(s.total_bytes, std::fs::metadata(&path).unwrap().len());
}
