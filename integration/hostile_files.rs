//! Hostile files and a flaky models directory against the real daemon: a
//! header with a 250 MB string, a thousand models with bloated metadata, the
//! directory renamed away under a running daemon.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use llama_router::gguf::writer::GgufWriter;
use llama_router::gguf::{GgmlType, Value};
use llama_router::proto::pb::{self, ListModelsRequest};
use prost::Message;
use support::{Daemon, free_port, state, tiny_model};
use tokio_stream::StreamExt;
use tonic::Code;

/// A valid GGUF whose `key` is a string of `len` zero bytes, written as a
/// hole so the test costs no disk and no memory.
fn huge_string_model(path: &Path, key: &str, len: u64) {
    let put_str = |f: &mut File, s: &[u8]| {
        f.write_all(&(s.len() as u64).to_le_bytes()).unwrap();
        f.write_all(s).unwrap();
    };
    let mut f = File::create(path).unwrap();
    f.write_all(b"GGUF").unwrap();
    f.write_all(&3u32.to_le_bytes()).unwrap();
    f.write_all(&1u64.to_le_bytes()).unwrap(); // tensors
    f.write_all(&2u64.to_le_bytes()).unwrap(); // metadata entries
    put_str(&mut f, b"general.architecture");
    f.write_all(&8u32.to_le_bytes()).unwrap();
    put_str(&mut f, b"llama");
    put_str(&mut f, key.as_bytes());
    f.write_all(&8u32.to_le_bytes()).unwrap();
    f.write_all(&len.to_le_bytes()).unwrap();
    f.seek(SeekFrom::Current(len as i64)).unwrap();
    put_str(&mut f, b"w");
    f.write_all(&1u32.to_le_bytes()).unwrap(); // dims
    f.write_all(&32u64.to_le_bytes()).unwrap();
    f.write_all(&(GgmlType::F32 as u32).to_le_bytes()).unwrap();
    f.write_all(&0u64.to_le_bytes()).unwrap(); // offset
    let end = f.stream_position().unwrap();
    f.set_len(end.div_ceil(32) * 32 + 128).unwrap();
}

/// The daemon's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib(d: &Daemon) -> u64 {
    support::proc_kib(d.child.id(), "VmHWM:") / 1024
}

/// `ListModels`, or the status it failed with.
async fn list(d: &Daemon) -> Result<pb::ListModelsResponse, tonic::Status> {
    d.client()
        .await
        .list_models(ListModelsRequest {})
        .await
        .map(tonic::Response::into_inner)
}

/// Polls `ListModels` until `check` holds; the last failure or list in the panic.
async fn wait_listed(d: &Daemon, what: &str, check: impl Fn(&[pb::Model]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = list(d).await;
        if let Ok(r) = &listed {
            if check(&r.models) {
                return;
            }
        }
        if Instant::now() > deadline {
            let shown = listed.map(|r| {
                r.models
                    .iter()
                    .map(|m| (m.id.clone(), state(m), m.failure_reason.len()))
                    .collect::<Vec<_>>()
            });
            panic!(
                "timed out waiting for {what}; ListModels: {shown:?}\nlog tail:\n{}",
                tail(&d.log_text())
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(log: &str) -> &str {
    let cut = log.len().saturating_sub(4000);
    log.get(cut..).unwrap_or(log)
}

/// `GET path` over plain HTTP/1.1; the body of its 200 answer.
fn http_get(port: u16, path: &str) -> Vec<u8> {
    let (code, body) = support::http(port, "GET", path, "", Duration::from_secs(30)).unwrap();
    assert_eq!(code, 200, "{body}");
    body.into_bytes()
}

#[tokio::test]
async fn a_250_mb_metadata_string_is_listed_failed_without_costing_memory() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("normal.gguf"), "Normal");
    huge_string_model(&dir.path().join("huge.gguf"), "general.name", 250_000_000);
    let d = Daemon::start(dir.path(), &[]).await;
    wait_listed(&d, "the huge model listed as failed", |m| {
        m.iter().any(|m| m.id == "huge" && state(m) == "failed")
    })
    .await;
    let models = list(&d).await.expect("ListModels must answer").models;
    let normal = models.iter().find(|m| m.id == "normal").unwrap();
    assert_eq!(
        (state(normal), normal.name.as_str()),
        ("discovered", "Normal")
    );
    let huge = models.iter().find(|m| m.id == "huge").unwrap();
    let reason = &huge.failure_reason;
    for part in [
        "general.name",
        "250000008",
        "67108864",
        "max_metadata_value_bytes",
    ] {
        assert!(reason.contains(part), "{part:?} not in {reason:?}");
    }
    let peak = peak_rss_mib(&d);
    assert!(peak < 300, "daemon peak RSS {peak} MiB");
    // The normal model still loads next to it.
    let stream = d
        .client()
        .await
        .load_model(pb::LoadModelRequest {
            id: "normal".into(),
            dry_run: false,
            start_worker: false,
        })
        .await
        .unwrap()
        .into_inner();
    let last = stream.collect::<Vec<_>>().await.pop().unwrap().unwrap();
    assert_eq!(state(last.model.as_ref().unwrap()), "ready");
}

#[tokio::test]
async fn a_thousand_models_with_bloated_metadata_list_in_a_small_answer() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(32 << 10);
    for i in 0..900 {
        GgufWriter::new()
            .kv("general.architecture", Value::String(long.clone()))
            .kv("general.name", Value::String(long.clone()))
            .tensor("w", GgmlType::F32, &[32])
            .write(&dir.path().join(format!("m{i:04}.gguf")))
            .unwrap();
    }
    // Refused files whose reason quotes a 32 KiB key.
    for i in 0..100 {
        GgufWriter::new()
            .kv(&long, Value::U8(1))
            .kv(&long, Value::U8(2))
            .write(&dir.path().join(format!("bad{i:03}.gguf")))
            .unwrap();
    }
    let port = free_port();
    let d = Daemon::start(dir.path(), &["--http-port", &port.to_string()]).await;
    wait_listed(&d, "1,000 models", |m| m.len() == 1000).await;
    let reply = list(&d).await.expect("ListModels must answer");
    let bytes = reply.encoded_len();
    assert!(bytes < 1 << 20, "ListModels is {bytes} bytes");
    let bad = reply.models.iter().find(|m| m.id == "bad000").unwrap();
    assert_eq!(state(bad), "failed");
    assert!(bad.failure_reason.contains("appears twice"), "{bad:?}");
    let body = http_get(port, "/v1/models");
    assert!(body.len() < 1 << 20, "/v1/models is {} bytes", body.len());
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["data"].as_array().unwrap().len(), 1000);
}

#[tokio::test]
async fn a_models_dir_renamed_away_and_back_keeps_its_models() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("models");
    let away = parent.path().join("away");
    std::fs::create_dir(&dir).unwrap();
    tiny_model(&dir.join("a.gguf"), "A");
    tiny_model(&dir.join("b.gguf"), "B");
    let d = Daemon::start(&dir, &[]).await;
    let stream = d
        .client()
        .await
        .load_model(pb::LoadModelRequest {
            id: "a".into(),
            dry_run: false,
            start_worker: false,
        })
        .await
        .unwrap()
        .into_inner();
    stream.collect::<Vec<_>>().await;
    assert_eq!(state(&d.model("a").await.unwrap()), "ready");
    let mut events = d.events().await;

    std::fs::rename(&dir, &away).unwrap();
    // A scan while the directory is gone says why and changes nothing.
    let err = d
        .client()
        .await
        .rescan(pb::RescanRequest {})
        .await
        .expect_err("a rescan of a vanished directory must not succeed");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("cannot read the models directory"),
        "{err:?}"
    );
    let ids: Vec<(String, &str)> = d
        .models()
        .await
        .iter()
        .map(|m| (m.id.clone(), state(m)))
        .collect();
    assert_eq!(ids, [("a".into(), "ready"), ("b".into(), "discovered")]);

    std::fs::rename(&away, &dir).unwrap();
    let summary = d
        .client()
        .await
        .rescan(pb::RescanRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((summary.models, summary.removed), (2, 0), "{summary:?}");
    assert_eq!(state(&d.model("a").await.unwrap()), "ready");
    // Nothing was unloaded or dropped on the way.
    if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(300), events.next()).await {
        panic!("unexpected event {event:?}");
    }
}

/// Sets the soft RLIMIT_NOFILE of process `pid`; returns the previous limits.
#[allow(unsafe_code)]
fn set_nofile(pid: u32, soft: u64) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads `new` and writes `old`, both valid for the call.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old
}

/// The lowest descriptor number process `pid` does not use: the one its next open takes.
fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

#[tokio::test]
async fn a_rescan_under_descriptor_exhaustion_keeps_every_model() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("a.gguf"), "A");
    tiny_model(&dir.path().join("b.gguf"), "B");
    let d = Daemon::start(dir.path(), &[]).await;
    // One connection, opened while descriptors are free, carries every call below.
    let mut client = d.client().await;
    let stream = client
        .load_model(pb::LoadModelRequest {
            id: "a".into(),
            dry_run: false,
            start_worker: false,
        })
        .await
        .unwrap()
        .into_inner();
    stream.collect::<Vec<_>>().await;
    let pid = d.child.id();
    // From here on the daemon cannot open anything: the next descriptor is past the limit.
    let old = set_nofile(pid, lowest_free_fd(pid));
    let rescan = client.rescan(pb::RescanRequest {}).await;
    let listed = client.list_models(ListModelsRequest {}).await;
    set_nofile(pid, old.rlim_cur);
    let err = rescan.expect_err("a scan that cannot read the directory must not succeed");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("Too many open files"), "{err:?}");
    let ids: Vec<(String, &str)> = listed
        .unwrap()
        .into_inner()
        .models
        .iter()
        .map(|m| (m.id.clone(), state(m)))
        .collect();
    assert_eq!(ids, [("a".into(), "ready"), ("b".into(), "discovered")]);
    // Descriptors back: the next scan reads the directory and nothing changed.
    let summary = client
        .rescan(pb::RescanRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((summary.models, summary.removed), (2, 0), "{summary:?}");
    assert_eq!(state(&d.model("a").await.unwrap()), "ready");
}
