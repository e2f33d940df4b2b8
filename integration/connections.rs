//! Hostile and heavy TCP clients against the real daemon: idle connections
//! past the descriptor limit, slowloris headers, idle keep-alive, and the
//! active-request gauge while a non-streamed completion generates.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{add_demo_model, bin, free_port, tiny_model};

/// A daemon started with a command prefix (prlimit) and extra environment.
struct Served {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    port: u16,
    _state: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    async fn start(models: &Path, prefix: &[&str], env: &[(&str, &str)], args: &[&str]) -> Served {
        let state = tempfile::tempdir().unwrap();
        let socket = state.path().join("router.sock");
        let log = state.path().join("daemon.log");
        let port = free_port();
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = command
            .arg("serve")
            .arg("--models-dir")
            .arg(models)
            .arg("--socket")
            .arg(&socket)
            .args([
                "--watch-debounce-ms",
                "200",
                "--http-port",
                &port.to_string(),
            ])
            .args(args)
            .env("RUST_LOG", "llama_router=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let served = Served {
            child,
            socket,
            log,
            port,
            _state: state,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let health =
                tokio::time::timeout(Duration::from_secs(5), served.http("GET", "/health", ""));
            if health
                .await
                .ok()
                .flatten()
                .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
            {
                return served;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("daemon did not come up; log:\n{}", served.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request on a fresh connection; the whole response, or None if it
    /// could not connect or got no answer within 2 minutes (a first
    /// completion loads the model and starts its worker).
    async fn http(&self, method: &str, path: &str, body: &str) -> Option<String> {
        let exchange = async {
            let mut s = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            let request = format!(
                "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(request.as_bytes()).await.ok()?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.ok()?;
            Some(String::from_utf8_lossy(&out).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(120), exchange)
            .await
            .ok()
            .flatten()
    }

    /// CPU seconds the daemon has used.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }

    /// The daemon's pid (not prlimit's: prlimit execs it).
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Raises this test process's descriptor limit so it can hold many connections.
fn raise_our_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_descriptor_limit_leave_the_daemon_serving() {
    raise_our_limit();
    let models = tempfile::tempdir().unwrap();
    tiny_model(&models.path().join("a.gguf"), "a");
    tiny_model(&models.path().join("b.gguf"), "b");
    let daemon = Served::start(
        models.path(),
        &["prlimit", "--nofile=1024:1024", "--"],
        &[],
        &[],
    )
    .await;

    // 1,100 idle connections: more than the daemon has descriptors.
    let mut idle = Vec::new();
    let opening = Instant::now();
    while idle.len() < 1100 && opening.elapsed() < Duration::from_secs(30) {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(500),
            TcpStream::connect(("127.0.0.1", daemon.port)),
        )
        .await
        {
            idle.push(s);
        }
    }
    assert!(idle.len() > 1024, "only {} connections opened", idle.len());
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The daemon does not spin on failed accepts.
    let cpu_before = daemon.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let busy = daemon.cpu_seconds() - cpu_before;
    assert!(
        busy < 1.5,
        "the daemon used {busy:.1} s of CPU in 3 s while holding idle connections"
    );

    // The control plane on the Unix socket keeps answering.
    let started = Instant::now();
    let status = tokio::task::spawn_blocking({
        let socket = daemon.socket.clone();
        move || {
            Command::new("timeout")
                .args(["20", bin(), "status", "--json"])
                .env("LLAMA_ROUTER_ENDPOINT", &socket)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        status.status.success() && started.elapsed() < Duration::from_secs(10),
        "status over the Unix socket failed or took {:?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&status.stderr)
    );

    // A new HTTP client past the budget is refused clearly, not left hanging.
    let refused = tokio::time::timeout(Duration::from_secs(10), daemon.http("GET", "/health", ""))
        .await
        .ok()
        .flatten();
    let refused = refused.expect("a client past the budget got no answer within 10 s");
    assert!(
        refused.starts_with("HTTP/1.1 503")
            && refused.to_ascii_lowercase().contains("retry-after:"),
        "{refused}"
    );

    // A rescan meanwhile (a file appears) keeps every model and adds the new one.
    tiny_model(&models.path().join("c.gguf"), "c");
    let mut client = llama_router::cli::client::connect(&daemon.socket.display().to_string())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ids = loop {
        let listed = client
            .list_models(llama_router::proto::pb::ListModelsRequest {})
            .await
            .unwrap()
            .into_inner()
            .models;
        let ids: Vec<String> = listed.into_iter().map(|m| m.id).collect();
        if ids.len() == 3 || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ids, ["a", "b", "c"], "log:\n{}", daemon.log_text());

    // Once the idle clients leave, HTTP serves again.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = daemon
            .http("GET", "/v1/models", "")
            .await
            .unwrap_or_default();
        if answer.starts_with("HTTP/1.1 200") {
            assert!(answer.contains("\"c\""), "{answer}");
            break;
        }
        assert!(Instant::now() < deadline, "HTTP did not recover: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads until the server closes the connection; how long that took, or None after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_are_cut_but_a_stream_is_not() {
    let models = tempfile::tempdir().unwrap();
    add_demo_model(models.path(), "demo");
    let daemon = Served::start(
        models.path(),
        &[],
        &[("LLAMA_ROUTER_HTTP_HEADER_TIMEOUT", "1")],
        &[],
    )
    .await;

    // Slowloris: headers that never end.
    let mut slow = TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let cut = closed_within(&mut slow, Duration::from_secs(10)).await;
    assert!(
        cut.is_some(),
        "a connection sending headers forever was kept open"
    );

    // Idle between requests on a kept-alive connection.
    let mut idle = TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let cut = closed_within(&mut idle, Duration::from_secs(10)).await;
    assert!(cut.is_some(), "an idle kept-alive connection was kept open");

    // A streamed answer that lasts longer than the timeout is not cut.
    let body = r#"{"model":"demo","prompt":"Once upon a time","max_tokens":60,"temperature":0,"stream":true}"#;
    let started = Instant::now();
    let answer = daemon.http("POST", "/v1/completions", body).await.unwrap();
    assert!(answer.contains("data: [DONE]"), "{answer}");
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the stream ended within the header timeout, so it proves nothing"
    );
}

/// The value of `llama_router_requests_active{model="MODEL"}` in a scrape.
fn active_gauge(metrics: &str, model: &str) -> Option<f64> {
    let prefix = format!("llama_router_requests_active{{model=\"{model}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_streamed_completion_counts_as_active_while_it_generates() {
    let models = tempfile::tempdir().unwrap();
    add_demo_model(models.path(), "demo");
    let daemon = std::sync::Arc::new(Served::start(models.path(), &[], &[], &[]).await);
    // Warm the worker so the request below generates at once.
    let warm = daemon
        .http(
            "POST",
            "/v1/completions",
            r#"{"model":"demo","prompt":"Hi","max_tokens":1}"#,
        )
        .await
        .unwrap();
    assert!(warm.starts_with("HTTP/1.1 200"), "{warm}");

    let body = r#"{"model":"demo","prompt":"Write a long story about a dragon.","max_tokens":2000,"temperature":0}"#;
    let generating = tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.http("POST", "/v1/completions", body).await }
    });
    let mut seen = Vec::new();
    let mut counted = false;
    while !generating.is_finished() {
        let scrape = daemon.http("GET", "/metrics", "").await.unwrap_or_default();
        let value = active_gauge(&scrape, "demo");
        seen.push(value);
        if value == Some(1.0) {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        counted,
        "requests_active never read 1 while the completion generated: {seen:?}"
    );
    // The client leaves: the generation is cancelled and the gauge comes back to 0.
    generating.abort();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scrape = daemon.http("GET", "/metrics", "").await.unwrap_or_default();
        if active_gauge(&scrape, "demo") == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "requests_active stayed up: {scrape}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
