//! The daemon under a (simulated) systemd: sd_notify messages on a datagram
//! socket, the watchdog, reload on SIGHUP, stop on SIGTERM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llama_router::proto::pb;
use support::{Daemon, state, tiny_model};

/// Collects every datagram sent to a NOTIFY_SOCKET.
struct NotifySocket {
    messages: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                if let Ok(n) = socket.recv(&mut buf) {
                    sink.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        NotifySocket { messages }
    }

    fn all(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until a message satisfies `check`; returns its index.
    async fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.all().iter().position(|m| check(m)) {
                return i;
            }
            assert!(Instant::now() < deadline, "no {what} in {:#?}", self.all());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn notifies_ready_status_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("gemma-3-270m.gguf"), "g");
    let sockets = tempfile::tempdir().unwrap();
    let notify_path = sockets.path().join("notify.sock");
    let notify = NotifySocket::bind(&notify_path);
    let mut d = Daemon::start_with_env(
        dir.path(),
        &[],
        &[
            ("NOTIFY_SOCKET", &notify_path),
            ("WATCHDOG_USEC", Path::new("400000")),
        ],
    )
    .await;

    let ready = notify.wait_for("READY", |m| m.contains("READY=1")).await;
    assert!(
        notify.all()[ready].contains("STATUS=1 model, 0 running; 0 failed"),
        "{:?}",
        notify.all()
    );

    d.cli(&["load", "gemma-3-270m"]);
    notify
        .wait_for("STATUS naming the running model", |m| {
            m.contains("STATUS=1 model, 1 running: gemma-3-270m; 0 failed")
        })
        .await;

    // WATCHDOG=1 every half period while the actors answer.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let pings = notify
        .all()
        .iter()
        .filter(|m| m.contains("WATCHDOG=1"))
        .count();
    assert!(
        pings >= 3,
        "{pings} watchdog pings in 1 s with a 400 ms period"
    );

    d.signal("HUP");
    let reloading = notify
        .wait_for("RELOADING", |m| m.contains("RELOADING=1"))
        .await;
    assert!(
        notify.all()[reloading].contains("MONOTONIC_USEC="),
        "{:?}",
        notify.all()[reloading]
    );
    let all = notify.all();
    let ready_again = loop {
        let all = notify.all();
        if let Some(i) = all
            .iter()
            .skip(reloading + 1)
            .position(|m| m.contains("READY=1"))
        {
            break reloading + 1 + i;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(ready_again > reloading, "{all:?}");
    // The reload did not stop the running model.
    assert_eq!(state(&d.model("gemma-3-270m").await.unwrap()), "ready");

    d.signal("TERM");
    notify
        .wait_for("STOPPING", |m| m.contains("STOPPING=1"))
        .await;
    let status = d.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn sighup_reloads_the_config_file_and_keeps_the_old_one_when_broken() {
    let dir = tempfile::tempdir().unwrap();
    for id in ["a", "b"] {
        tiny_model(&dir.path().join(format!("{id}.gguf")), id);
    }
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("config.toml");
    std::fs::write(&conf, "models_max = 2\n").unwrap();
    let d = Daemon::start(dir.path(), &["--config", conf.to_str().unwrap()]).await;
    d.cli(&["load", "a"]);
    d.cli(&["load", "b"]);
    let ready = |m: &[pb::Model]| m.iter().filter(|m| state(m) == "ready").count();
    assert_eq!(ready(&d.models().await), 2);

    // A broken file: the daemon says why and keeps serving with the old settings.
    std::fs::write(&conf, "models_max = \"one\"\n").unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("keeping the previous one") {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        d.log_text().contains("models_max"),
        "the error names the key"
    );
    assert_eq!(ready(&d.models().await), 2);

    // A lower --models-max evicts the least recently used idle model.
    std::fs::write(&conf, "models_max = 1\n").unwrap();
    d.signal("HUP");
    d.wait_for("eviction after reload", |m| {
        m.iter().any(|m| m.id == "a" && state(m) == "unloaded")
    })
    .await;
    assert_eq!(ready(&d.models().await), 1);
    let status = d.status().await;
    assert_eq!(status.models_max, 1);
}
