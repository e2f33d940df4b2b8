//! Crash reports against the real daemon and the demo model: a worker killed
//! by SIGSEGV leaves a report that `llama-router crashes` lists and shows,
//! that the model's failure reason names, that gRPC serves, that `/metrics`
//! counts, and that survives a restart.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::time::{Duration, Instant};

use llama_router::proto::pb;
use support::{Daemon, add_demo_model, collect, free_port, greedy, http};

#[tokio::test]
async fn a_segfaulted_worker_leaves_a_report_that_is_listed_shown_counted_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let crashes = dir.path().join("state").join("crashes");
    let port = free_port().to_string();
    let args = [
        "--crash-dir",
        crashes.to_str().unwrap(),
        "--http-port",
        &port,
    ];
    let d = Daemon::start(dir.path(), &args).await;
    let stream = d
        .inference()
        .await
        .generate(greedy("gemma", "The capital of France is", 4))
        .await
        .unwrap()
        .into_inner();
    let out = collect(stream).await.unwrap();
    assert!(!out.text.is_empty());
    let pid = d.model("gemma").await.unwrap().worker_pid;
    assert!(pid > 0);
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGSEGV,
    )
    .unwrap();

    // The model fails with a reason that names its report.
    let deadline = Instant::now() + Duration::from_secs(20);
    let reason = loop {
        let m = d.model("gemma").await.unwrap();
        if m.state == pb::ModelState::Failed as i32 && m.failure_reason.contains("crash report") {
            break m.failure_reason;
        }
        assert!(Instant::now() < deadline, "no crash report in {m:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(reason.contains("worker killed by SIGSEGV"), "{reason}");
    eprintln!("crash to report named in the model: {:?}", killed.elapsed());

    // `crashes --json` lists it; its id is the one the reason names.
    let list = d.cli_json(&["crashes", "--json"]);
    let all = list.as_array().unwrap();
    assert_eq!(all.len(), 1, "{list}");
    let c = &all[0];
    assert_eq!(c["model"], "gemma");
    assert_eq!(c["signal"], "SIGSEGV");
    assert_eq!(c["worker_pid"], pid);
    let id = c["id"].as_str().unwrap().to_owned();
    assert!(reason.contains(&format!("crash report {id}")), "{reason}");

    // `crashes show ID --json`: the whole report.
    let report = d.cli_json(&["crashes", "show", &id, "--json"]);
    assert_eq!(report["exit"]["signal_name"], "SIGSEGV");
    assert_eq!(report["worker_pid"], pid);
    assert!(
        report["files"][0].as_str().unwrap().ends_with("gemma.gguf"),
        "{report}"
    );
    assert!(report["settings"]["ctx_size"].as_u64().unwrap() > 0);
    // The devices the daemon saw: here ggml's CPU device, not an offload target.
    let devices = report["devices"].as_array().unwrap();
    assert!(
        devices
            .iter()
            .any(|d| d.as_str().unwrap().starts_with("cpu:0")),
        "{report:#}"
    );
    assert!(
        !report["stderr"].as_array().unwrap().is_empty(),
        "the worker's last stderr lines are kept"
    );
    assert!(
        report["build"]
            .as_str()
            .unwrap()
            .starts_with("llama-router ")
    );
    // In words, for people.
    let text = d.cli(&["crashes", "show", &id]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("worker killed by SIGSEGV") && text.contains("stderr"),
        "{text}"
    );
    // The report is private: 0600 in a 0700 directory.
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::metadata(crashes.join(format!("{id}.json"))).unwrap();
    eprintln!("report size: {} bytes", file.len());
    assert_eq!(file.mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&crashes).unwrap().mode() & 0o777, 0o700);

    // gRPC: a bad id and an unknown one are typed errors.
    let mut client = d.client().await;
    let bad = client
        .get_crash(pb::GetCrashRequest {
            id: "../../etc/passwd".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let unknown = client
        .get_crash(pb::GetCrashRequest {
            id: "20000101T000000Z-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // /metrics counts it by model and signal.
    let port: u16 = port.parse().unwrap();
    let (code, metrics) = http(port, "GET", "/metrics", "", Duration::from_secs(5)).unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains(
            "llama_router_worker_crash_reports_total{model=\"gemma\",signal=\"SIGSEGV\"} 1"
        ),
        "{metrics}"
    );
    // The one ERROR event names the report.
    assert!(d.log_text().contains(&id), "the log does not name {id}");
    drop(d);

    // A restart keeps the reports.
    let d = Daemon::start(dir.path(), &args).await;
    let list = d.cli_json(&["crashes", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn without_a_crash_directory_the_daemon_still_serves_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    support::tiny_model(&dir.path().join("tiny.gguf"), "tiny");
    // The crash directory is a file: it cannot be used.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let crash_dir = blocker.join("crashes");
    let d = Daemon::start(dir.path(), &["--crash-dir", crash_dir.to_str().unwrap()]).await;
    assert_eq!(d.models().await.len(), 1);
    let out = d.cli(&["crashes"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("crash reports are off"), "{err}");
    assert!(d.log_text().contains("cannot keep crash reports"));
}

#[tokio::test]
async fn a_report_lists_the_requests_the_worker_was_serving() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let crashes = dir.path().join("crashes");
    let d = Daemon::start(dir.path(), &["--crash-dir", crashes.to_str().unwrap()]).await;
    // A long generation, a few tokens into it when the worker dies.
    let mut stream = d
        .inference()
        .await
        .generate(greedy("gemma", "Once upon a time", 2000))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        stream.message().await.unwrap().unwrap();
    }
    let pid = d.model("gemma").await.unwrap().worker_pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGSEGV,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let list = d.cli_json(&["crashes", "--json"]);
        if let Some(c) = list.as_array().and_then(|a| a.first()) {
            break c["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no crash report");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let report = d.cli_json(&["crashes", "show", &id, "--json"]);
    let requests = report["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 1, "{report:#}");
    let r = &requests[0];
    assert_eq!(r["kind"], "generate");
    assert_eq!(r["client"], "grpc");
    assert!(r["generated_tokens"].as_u64().unwrap() >= 3, "{r}");
    assert!(
        !report.to_string().contains("Once upon a time"),
        "a report never holds prompt text"
    );
}

/// Waits for the first crash report to be complete (written at once, its
/// stacks symbolized a moment later) and returns it whole.
async fn first_report(d: &Daemon) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = d.cli_json(&["crashes", "--json"]);
        if let Some(c) = list.as_array().and_then(|a| a.first()) {
            let id = c["id"].as_str().unwrap().to_owned();
            let report = d.cli_json(&["crashes", "show", &id, "--json"]);
            let capture = report["capture"].as_str().unwrap_or_default();
            if !capture.contains("being symbolized") {
                return report;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no complete crash report; log:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn frames(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["backtrace"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_model_file_truncated_under_a_stream_is_a_sigbus_report_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    // A copy, never a link to the cached demo model: it is about to be cut short.
    let model = dir.path().join("cut.gguf");
    std::fs::copy(support::demo_model(), &model).unwrap();
    let crashes = dir.path().join("crashes");
    // One llama.cpp thread: the fault then lands in the decode thread, whose
    // stack runs from ggml up through llama.cpp into ours. With a pool, it
    // can land in an OpenMP worker thread, whose stack is ggml's two frames
    // over libgomp's thread start, which the unwinder does not get through.
    let args = ["--crash-dir", crashes.to_str().unwrap(), "--threads", "1"];
    let d = Daemon::start(dir.path(), &args).await;
    let mut stream = d
        .inference()
        .await
        .generate(greedy("cut", "Once upon a time", 2000))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        stream.message().await.unwrap().unwrap();
    }
    let cut = Instant::now();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let report = first_report(&d).await;
    eprintln!(
        "truncation to report: {:?}, report {} bytes",
        cut.elapsed(),
        report.to_string().len()
    );
    assert_eq!(report["exit"]["signal_name"], "SIGBUS", "{report:#}");
    assert_eq!(report["signal_detail"], "non-existent physical address");
    let fault = &report["fault"]["file"];
    assert!(
        fault["path"].as_str().unwrap().ends_with("cut.gguf"),
        "{report:#}"
    );
    assert_eq!(fault["file_len"], 4096);
    assert_eq!(fault["past_end"], true);
    assert!(fault["offset"].as_u64().unwrap() >= 4096);
    assert!(
        report["capture"]
            .as_str()
            .unwrap()
            .starts_with("captured in the worker"),
        "{}",
        report["capture"]
    );
    let frames = frames(&report);
    assert!(frames.len() >= 5, "{frames:#?}");
    // The fault is in llama.cpp's own code, named with its file and line.
    assert!(
        frames.iter().any(|f| {
            let function = f["function"].as_str().unwrap_or_default();
            let file = f["file"].as_str().unwrap_or_default();
            (function.starts_with("ggml_") || function.starts_with("llama_"))
                && (file.ends_with(".c") || file.ends_with(".cpp"))
                && f["line"].as_u64().is_some_and(|l| l > 0)
        }),
        "no ggml/llama frame with file:line: {frames:#?}"
    );
    // And on up through llama.cpp into ours, whichever ggml kernel it hit
    // (those that realign their stack take the CFI expressions of crashes::cfi).
    assert!(
        frames.iter().any(|f| f["function"]
            .as_str()
            .is_some_and(|name| name.starts_with("llama_router::engine::"))),
        "the stack stops short of the engine's decode loop: {frames:#?}"
    );
    let requests = report["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 1, "the stream in flight: {report:#}");
    // The one ERROR event carries the top frames.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d
        .log_text()
        .lines()
        .any(|l| l.contains("top_frames=") && l.contains("ggml"))
    {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_signal_sent_by_another_process_names_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let crashes = dir.path().join("crashes");
    let d = Daemon::start(dir.path(), &["--crash-dir", crashes.to_str().unwrap()]).await;
    let stream = d
        .inference()
        .await
        .generate(greedy("gemma", "Hello", 1))
        .await
        .unwrap()
        .into_inner();
    collect(stream).await.unwrap();
    let pid = d.model("gemma").await.unwrap().worker_pid;
    // `kill`, a process of its own, so that the sender is neither us nor the worker.
    let mut sender = std::process::Command::new("sh")
        .args(["-c", &format!("kill -SEGV {pid}; sleep 5")])
        .spawn()
        .unwrap();
    let report = first_report(&d).await;
    let _ = sender.kill();
    let _ = sender.wait();
    assert_eq!(report["exit"]["signal_name"], "SIGSEGV");
    let detail = report["signal_detail"].as_str().unwrap();
    assert!(detail.starts_with("sent by kill()"), "{detail}");
    assert_eq!(report["sender"]["pid"], sender.id(), "{report:#}");
    assert_eq!(report["sender"]["uid"], nix::unistd::getuid().as_raw());
    assert_eq!(report["sender"]["command"], "sh", "{report:#}");
    assert!(
        report["fault"].is_null(),
        "a sent signal has no fault address"
    );
    assert!(
        frames(&report).len() >= 3,
        "the stack where it landed: {report:#}"
    );
}
