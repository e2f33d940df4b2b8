//! `llama-router inspect` run as a user runs it: the real binary on real files.

// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use llama_router::gguf::writer::GgufWriter;
use llama_router::gguf::{Array, GgmlType, Value};
use serde_json::Value as Json;

fn inspect(args: &[&str], path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llama-router"))
        .arg("inspect")
        .args(args)
        .arg(path)
        .output()
        .expect("run llama-router")
}

fn tiny_model() -> GgufWriter {
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("general.name", Value::String("Tiny Llama".into()))
        .kv("llama.context_length", Value::U32(2048))
        .kv("big", Value::U64(u64::MAX))
        .kv(
            "nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![-1]),
                Array::String(Default::default()),
            ])),
        )
        .kv(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(vec!["<s>", "a"].into())),
        )
        .tensor("token_embd.weight", GgmlType::Q4_K, &[256, 2])
        .tensor("output_norm.weight", GgmlType::F32, &[256])
}

#[test]
fn text_report_shows_summary_then_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    tiny_model().write(&path).unwrap();
    let out = inspect(&[], &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("architecture:     llama"), "{text}");
    assert!(text.contains("name:             Tiny Llama"), "{text}");
    assert!(text.contains("parameters:       768"), "{text}");
    assert!(text.contains("context length:   2048"), "{text}");
    assert!(text.contains("tokenizer:        2 tokens"), "{text}");
    assert!(text.contains("tensors (2):"), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains("token_embd.weight"))
        .unwrap();
    assert!(
        row.contains("Q4_K") && row.contains("[256, 2]") && row.contains("288 B"),
        "{row}"
    );
}

#[test]
fn json_report_has_files_metadata_tensors_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    tiny_model().write(&path).unwrap();
    let out = inspect(&["--json"], &path);
    assert!(out.status.success());
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["files"],
        serde_json::json!([path.display().to_string()])
    );
    assert_eq!(doc["version"], 3);
    // u64::MAX does not fit a double: it must come out exact.
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"big\":18446744073709551615"));
    assert_eq!(doc["metadata"]["nested"], serde_json::json!([[-1], []]));
    let keys: Vec<&str> = doc["metadata"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys[0], "general.architecture", "metadata keeps file order");
    let t = &doc["tensors"][0];
    assert_eq!(t["name"], "token_embd.weight");
    assert_eq!(t["type"], "Q4_K");
    assert_eq!(t["dims"], serde_json::json!([256, 2]));
    assert_eq!(t["shard"], 0);
    assert_eq!(t["size"], 288);
    let offset = t["offset"].as_u64().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(offset % 32, 0);
    assert_eq!(
        bytes.len() as u64,
        doc["summary"]["total_bytes"].as_u64().unwrap()
    );
    assert_eq!(doc["summary"]["parameter_count"], 768);
    assert_eq!(doc["summary"]["architecture"], "llama");
}

fn assert_refused(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one error line: {err}");
    assert!(err.contains(needle), "{err}");
}

#[test]
fn a_bad_file_exits_2_with_one_line_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let mut bytes = tiny_model().to_bytes();
    bytes.truncate(100);
    std::fs::write(&path, &bytes).unwrap();
    for args in [&[][..], &["--json"][..]] {
        let out = inspect(args, &path);
        assert_refused(&out, "bad.gguf: at byte");
    }
    std::fs::write(&path, b"not a model at all").unwrap();
    assert_refused(&inspect(&[], &path), "not a GGUF file");
    assert_refused(
        &inspect(&[], &dir.path().join("absent.gguf")),
        "cannot read",
    );
}

#[test]
fn any_shard_of_a_split_set_inspects_the_whole_set() {
    let dir = tempfile::tempdir().unwrap();
    support::write_split_set(dir.path(), "set", 2);
    let out = inspect(&["--json"], &dir.path().join("set-00002-of-00002.gguf"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["files"].as_array().unwrap().len(), 2);
    assert_eq!(doc["tensors"][1]["name"], "t1");
    assert_eq!(doc["tensors"][1]["shard"], 1);
    assert_eq!(doc["summary"]["shard_count"], 2);

    std::fs::remove_file(dir.path().join("set-00001-of-00002.gguf")).unwrap();
    let out = inspect(&[], &dir.path().join("set-00002-of-00002.gguf"));
    assert_refused(&out, "missing shard 1 of 2");
}
