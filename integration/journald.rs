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

/// A journald started for the test (none if one already runs); stopped on drop.
struct Journald(Option<Child>);

impl Journald {
    fn ensure() -> Journald {
        if Path::new(JOURNAL_STDOUT).exists() && UnixStream::connect(JOURNAL_STDOUT).is_ok() {
            return Journald(None);
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
        Journald(Some(child))
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
    let (stream, journal_stream_id) = journal_stream("llama-router");
    let env_value = std::path::PathBuf::from(&journal_stream_id);
    let d = Daemon::start_full(
        dir.path(),
        // Only SIGHUP or Rescan may notice the file going away below.
        &["--watch-debounce-ms", "60000"],
        &[("JOURNAL_STREAM", env_value.as_path())],
        Some(Stdio::from(std::os::fd::OwnedFd::from(stream))),
    )
    .await;

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
