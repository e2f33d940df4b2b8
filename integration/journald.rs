//! Logs in a real systemd-journald: the daemon's stderr is a journal stream
//! and JOURNAL_STREAM says so, exactly as under systemd; the structured
//! fields are read back with `journalctl -o json`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use support::{Daemon, tiny_model};

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
const JOURNAL_STDOUT: &str = "/run/systemd/journal/stdout";

/// Tests take turns: each may start (and on drop stop) its own journald.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A journald started for the test (none if one already runs); stopped on drop.
struct Journald(
    Option<Child>,
    #[allow(dead_code)] std::sync::MutexGuard<'static, ()>,
);

impl Journald {
    fn ensure() -> Journald {
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if Path::new(JOURNAL_STDOUT).exists() && UnixStream::connect(JOURNAL_STDOUT).is_ok() {
            return Journald(None, turn);
        }
        std::fs::create_dir_all("/run/systemd/journal").unwrap();
        let child = Command::new("/lib/systemd/systemd-journald")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /lib/systemd/systemd-journald");
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(JOURNAL_STDOUT).is_err() {
            assert!(Instant::now() < deadline, "journald did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(Path::new(JOURNAL_SOCKET).exists());
        Journald(Some(child), turn)
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A journal stream connection, as systemd gives a service for its stderr, and its JOURNAL_STREAM value.
fn journal_stream(identifier: &str) -> (UnixStream, String) {
    let mut stream = UnixStream::connect(JOURNAL_STDOUT).unwrap();
    // identifier, unit, priority, level prefix, forward to syslog/kmsg/console
    write!(stream, "{identifier}\n\n6\n0\n0\n0\n0\n").unwrap();
    let fd: std::os::fd::OwnedFd = stream.try_clone().unwrap().into();
    let meta = std::fs::File::from(fd).metadata().unwrap();
    (stream, format!("{}:{}", meta.dev(), meta.ino()))
}

/// The daemon on `models`, its stderr a journal stream as systemd gives a service.
async fn start_on_journal(models: &Path, args: &[&str]) -> Daemon {
    let (stream, journal_stream_id) = journal_stream("llama-router");
    let env_value = std::path::PathBuf::from(&journal_stream_id);
    Daemon::start_full(
        models,
        args,
        &[("JOURNAL_STREAM", env_value.as_path())],
        Some(Stdio::from(std::os::fd::OwnedFd::from(stream))),
    )
    .await
}

fn journal_entries(model: &str) -> Vec<Json> {
    let out = Command::new("journalctl")
        .args(["-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=llama-router"])
        .arg(format!("MODEL={model}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn structured_fields_reach_the_journal_with_priorities() {
    if !Path::new("/lib/systemd/systemd-journald").exists() {
        panic!("systemd-journald is required (apt-get install systemd)");
    }
    let _journald = Journald::ensure();
    let dir = tempfile::tempdir().unwrap();
    let model = format!("journal-test-{}", std::process::id());
    let path = dir.path().join(format!("{model}.gguf"));
    tiny_model(&path, "j");
    // Only SIGHUP or Rescan may notice the file going away below.
    let d = start_on_journal(dir.path(), &["--watch-debounce-ms", "60000"]).await;

    assert!(d.cli(&["load", &model]).status.success());
    d.cli(&["unload", &model]);
    // A load that fails: the file is gone, the catalog does not know yet.
    std::fs::remove_file(&path).unwrap();
    let out = d.cli(&["load", &model]);
    assert!(!out.status.success());

    let deadline = Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let entries = journal_entries(&model);
        if entries.iter().any(|e| e["PRIORITY"] == "3") || Instant::now() > deadline {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let states: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["MODEL_STATE"].as_str())
        .collect();
    assert!(
        states.contains(&"loading") && states.contains(&"ready"),
        "{entries:#?}"
    );
    let error = entries
        .iter()
        .find(|e| e["PRIORITY"] == "3")
        .unwrap_or_else(|| panic!("no error entry: {entries:#?}"));
    assert_eq!(error["MODEL"], model.as_str());
    assert!(
        error["ERROR"].as_str().unwrap().contains(".gguf"),
        "{error:#}"
    );
    assert_eq!(error["SYSLOG_IDENTIFIER"], "llama-router");
    // journalctl -p warning finds the error and not the info lines.
    let out = Command::new("journalctl")
        .args([
            "-o",
            "json",
            "--no-pager",
            "-p",
            "warning",
            "SYSLOG_IDENTIFIER=llama-router",
        ])
        .arg(format!("MODEL={model}"))
        .output()
        .unwrap();
    let warnings: Vec<Json> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !warnings.is_empty()
            && warnings
                .iter()
                .all(|e| e["PRIORITY"].as_str().unwrap() <= "4"),
        "{warnings:#?}"
    );
}

#[tokio::test]
async fn a_worker_crash_is_one_error_event_with_the_signal_and_its_stderr() {
    let _journald = Journald::ensure();
    let dir = tempfile::tempdir().unwrap();
    let model = format!("crash-test-{}", std::process::id());
    support::add_demo_model(dir.path(), &model);
    let d = start_on_journal(dir.path(), &[]).await;
    let out = d.cli(&["generate", &model, "Hello", "--max-tokens", "2"]);
    assert!(out.status.success(), "{out:?}");
    let pid = d.model(&model).await.unwrap().worker_pid;
    assert!(pid > 0);
    Command::new("kill")
        .args(["-SEGV", &pid.to_string()])
        .status()
        .unwrap();

    let errors = |entries: Vec<Json>| -> Vec<Json> {
        entries
            .into_iter()
            .filter(|e| e["PRIORITY"].as_str().unwrap_or("7") <= "3")
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = errors(journal_entries(&model));
    while found.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        found = errors(journal_entries(&model));
    }
    // Let anything else that might follow arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let found = errors(journal_entries(&model));
    assert_eq!(
        found.len(),
        1,
        "exactly one error event per crash: {found:#?}"
    );
    let event = &found[0];
    assert!(
        event["ERROR"]
            .as_str()
            .unwrap()
            .contains("worker killed by SIGSEGV"),
        "{event:#}"
    );
    assert_eq!(event["WORKER_PID"], pid.to_string().as_str());
    assert!(
        event["STDERR"].as_str().unwrap().contains("worker ready"),
        "the worker's last stderr lines: {event:#}"
    );
    assert_eq!(event["SIGNAL"], "SIGSEGV", "{event:#}");
    let crash_id = event["CRASH_ID"].as_str().unwrap_or_default();
    assert!(
        !crash_id.is_empty() && event["ERROR"].as_str().unwrap().contains(crash_id),
        "the event names its crash report: {event:#}"
    );
    // The stack where the signal landed, symbolized from the captured minidump.
    let top = event["TOP_FRAMES"].as_str().unwrap_or_default();
    assert!(
        top.contains(" < ") && top.contains(".rs:"),
        "top frames: {event:#}"
    );
}

#[tokio::test]
async fn a_corrupt_model_file_is_one_warning_per_change() {
    let _journald = Journald::ensure();
    let dir = tempfile::tempdir().unwrap();
    let model = format!("corrupt-test-{}", std::process::id());
    let path = dir.path().join(format!("{model}.gguf"));
    std::fs::write(&path, b"this is not a GGUF file at all").unwrap();
    let d = start_on_journal(dir.path(), &[]).await;
    let warnings = |model: &str| -> Vec<Json> {
        journal_entries(model)
            .into_iter()
            .filter(|e| e["PRIORITY"] == "4")
            .collect()
    };
    let wait_for = |count: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = warnings(&model);
            if found.len() >= count || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let found = wait_for(1);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0]["ERROR"]
            .as_str()
            .unwrap()
            .contains("not a GGUF file"),
        "{:#}",
        found[0]
    );
    // Rescans of the same file say nothing more.
    let mut client = d.client().await;
    let rescan = llama_router::proto::pb::RescanRequest {};
    client.rescan(rescan).await.unwrap();
    client.rescan(rescan).await.unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(warnings(&model).len(), 1, "once per change");
    // A changed file that still fails: once more.
    std::fs::write(&path, b"still not a GGUF file, but longer than before").unwrap();
    client.rescan(rescan).await.unwrap();
    assert_eq!(wait_for(2).len(), 2);
}
