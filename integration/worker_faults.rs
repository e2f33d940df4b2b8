//! Misbehaving workers and hostile local clients, against the real daemon:
//! faults are injected through `worker_wrapper` (a shell script that floods
//! stderr or stdout, or never says READY, for one model and execs the real
//! worker for the others), and a client dials a worker's socket directly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use llama_router::proto::pb;
use llama_router::proto::pb::inference_service_client::InferenceServiceClient;
use support::{Daemon, add_demo_model, collect, greedy, proc_kib, state, tiny_model};

/// Peak RSS the daemon may reach while a worker floods (the old relay: ~956 MiB).
const RSS_BOUND_KIB: u64 = 200 << 10;
/// 300 MB of 'x' on stderr, one line (the measurement), then exit.
const STDERR_FLOOD: &str = "head -c 300000000 /dev/zero | tr '\\0' x >&2; exit 1";
/// The same on stdout, before READY.
const STDOUT_FLOOD: &str = "head -c 300000000 /dev/zero | tr '\\0' x; exit 1";

/// A wrapper script that runs `fault` (which must end by exiting or exec'ing)
/// for model `id`, and execs the real worker for the others.
fn wrapper(dir: &Path, id: &str, fault: &str) -> PathBuf {
    let path = dir.join("wrapper.sh");
    let script =
        format!("#!/bin/sh\ncase \"$*\" in *\"--model-id {id} \"*) {fault};; esac\nexec \"$@\"\n");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A config file that sets `worker_wrapper` (a list, so a file rather than a flag).
fn config_with_wrapper(dir: &Path, wrapper: &Path) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!("worker_wrapper = [\"{}\"]\n", wrapper.display()),
    )
    .unwrap();
    path
}

/// Asks for `id` (so its worker starts), waits until the model is failed, returns its reason.
async fn failure_of(d: &Daemon, id: &str, within: Duration) -> String {
    let mut client = d.inference().await;
    let request = async {
        let stream = client.generate(greedy(id, "hi", 1)).await?.into_inner();
        collect(stream).await
    };
    let answer = tokio::time::timeout(within, request).await;
    assert!(
        answer.as_ref().is_ok_and(Result::is_err),
        "the request on {id} must fail in time: {answer:?} (daemon peak RSS {} MiB)",
        proc_kib(d.child.id(), "VmHWM:") >> 10
    );
    let deadline = Instant::now() + within;
    loop {
        let m = d.model(id).await.unwrap();
        if state(&m) == "failed" {
            return m.failure_reason;
        }
        assert!(Instant::now() < deadline, "{id} did not fail: {m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker that floods one of its pipes is killed with a reason that says
/// so; the daemon's memory and log stay bounded, and another model still answers.
async fn flood_is_bounded(fault: &str) {
    let dir = tempfile::tempdir().unwrap();
    let etc = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("chatty.gguf"), "chatty");
    add_demo_model(dir.path(), "gemma");
    let config = config_with_wrapper(etc.path(), &wrapper(etc.path(), "chatty", fault));
    let d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]).await;

    let reason = failure_of(&d, "chatty", Duration::from_secs(60)).await;
    let peak = proc_kib(d.child.id(), "VmHWM:");
    eprintln!(
        "daemon peak RSS {} MiB; reason: {:.400}",
        peak >> 10,
        reason
    );
    assert!(
        peak < RSS_BOUND_KIB,
        "daemon peak RSS {} MiB while a worker flooded (bound {} MiB)",
        peak >> 10,
        RSS_BOUND_KIB >> 10
    );
    assert!(
        reason.contains("worker killed: it wrote more than") && reason.contains("of output in"),
        "{:.400}",
        reason
    );
    let log_len = std::fs::metadata(&d.log).unwrap().len();
    assert!(log_len < 4 << 20, "the daemon log grew to {log_len} bytes");
    assert!(d.log_text().contains("worker killed: it wrote more than"));

    // The daemon is fine: a well-behaved model (through the same wrapper) answers.
    let stream = d
        .inference()
        .await
        .generate(greedy("gemma", "The capital of France is", 4))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(collect(stream).await.unwrap().tokens.len(), 4);
}

#[tokio::test]
async fn a_worker_flooding_stderr_is_killed_and_the_daemon_stays_small() {
    flood_is_bounded(STDERR_FLOOD).await;
}

#[tokio::test]
async fn a_worker_flooding_stdout_before_ready_is_killed_and_the_daemon_stays_small() {
    flood_is_bounded(STDOUT_FLOOD).await;
}

#[tokio::test]
async fn an_endless_stderr_line_is_cut_with_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let etc = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("liner.gguf"), "liner");
    // 1 MB on one line, then the worker exits: under the flood bound, so it is cut, not killed.
    let fault = "head -c 1000000 /dev/zero | tr '\\0' y >&2; echo >&2; exit 3";
    let config = config_with_wrapper(etc.path(), &wrapper(etc.path(), "liner", fault));
    let d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]).await;
    let reason = failure_of(&d, "liner", Duration::from_secs(30)).await;
    assert!(reason.contains("worker exited with code 3"), "{reason}");
    assert!(reason.contains("more bytes of this line cut]"), "{reason}");
    assert!(reason.len() < 2000, "{} bytes of reason", reason.len());
    let log = d.log_text();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 64 << 10, "a log line of {longest} bytes");
}

#[tokio::test]
async fn a_worker_that_never_says_ready_fails_after_the_start_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let etc = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("mute.gguf"), "mute");
    let config = config_with_wrapper(etc.path(), &wrapper(etc.path(), "mute", "exec sleep 60"));
    let d = Daemon::start(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--worker-start-timeout",
            "2",
        ],
    )
    .await;
    let reason = failure_of(&d, "mute", Duration::from_secs(30)).await;
    assert!(reason.contains("did not start within 2 s"), "{reason}");
}

/// Sets the process umask (inherited by the daemon this test starts).
#[allow(unsafe_code)]
fn set_umask(mask: u32) {
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}

/// The worker sockets under the daemon's runtime directory (its `workers/`
/// directory, or the runtime directory itself on older builds).
fn worker_sockets(d: &Daemon) -> Vec<PathBuf> {
    let run = d.socket.parent().unwrap();
    [run.join("workers"), run.to_path_buf()]
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("worker-"))
        })
        .collect()
}

#[tokio::test]
async fn a_worker_socket_is_private_and_answers_only_its_daemon() {
    set_umask(0);
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(dir.path(), &[]).await;
    set_umask(0o022);
    let first = collect(
        d.inference()
            .await
            .generate(greedy("gemma", "Hello", 2))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(first.tokens.len(), 2);
    let all = worker_sockets(&d);
    let sockets: Vec<_> = all
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .cloned()
        .collect();
    assert_eq!(sockets.len(), 1, "{all:?}");
    let socket = sockets[0].clone();
    // Its crash capture socket had its path removed once the worker was
    // connected to it: no other process can reach it (the crash tests show
    // capture still works).
    let capture = socket.with_extension("crash");
    assert!(!all.contains(&capture), "{all:?}");
    assert!(
        std::fs::symlink_metadata(&capture).is_err(),
        "{capture:?} is still there for any process of our uid to connect to"
    );

    // A local client that is not the daemon dials the worker directly: refused.
    let direct = tokio::time::timeout(Duration::from_secs(10), async {
        let channel = llama_router::proto::transport::unix_channel(socket.clone()).await?;
        let answer = InferenceServiceClient::new(channel)
            .tokenize(pb::TokenizeRequest {
                model: "gemma".into(),
                text: "no key, no lease".into(),
                add_special: true,
                parse_special: true,
                ..Default::default()
            })
            .await;
        Ok::<_, Box<dyn std::error::Error>>(answer?)
    })
    .await
    .expect("a refused client must get an error, not a hang");
    assert!(
        direct.is_err(),
        "the worker answered a client that is not its daemon: {direct:?}"
    );

    // Under umask 000: the directory is 0700, the socket 0600, both ours.
    let workers = socket.parent().unwrap();
    assert_eq!(workers.file_name().unwrap(), "workers", "{socket:?}");
    let dir_meta = std::fs::symlink_metadata(workers).unwrap();
    assert_eq!(dir_meta.mode() & 0o7777, 0o700, "{workers:?}");
    let sock_meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(sock_meta.mode() & 0o7777, 0o600, "{socket:?}");

    // The worker says why, and keeps serving its daemon.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("refused a connection to this worker") {
        assert!(
            Instant::now() < deadline,
            "no warning; log:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = collect(
        d.inference()
            .await
            .generate(greedy("gemma", "Hello", 2))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(again.tokens, first.tokens);
}
