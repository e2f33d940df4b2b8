//! Shared test support: start the real daemon on a temp directory, talk to it over gRPC.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llama_router::gguf::writer::{GgufWriter, TensorSpec};
use llama_router::gguf::{GgmlType, Value, read_header};
use llama_router::proto::pb::inference_service_client::InferenceServiceClient;
use llama_router::proto::pb::model_service_client::ModelServiceClient;
use llama_router::proto::pb::{self, ListModelsRequest};
use tonic::transport::Channel;

/// The daemon binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_llama-router")
}

/// A running `llama-router serve`, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    _state: tempfile::TempDir,
}

impl Daemon {
    /// Starts the daemon on `models_dir` with extra flags and waits until it answers.
    pub async fn start(models_dir: &Path, args: &[&str]) -> Daemon {
        Self::start_with_env(models_dir, args, &[]).await
    }

    /// Like `start`, with extra environment variables.
    pub async fn start_with_env(models_dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Daemon {
        Self::start_full(models_dir, args, env, None).await
    }

    /// Like `start_with_env`, with stderr going to `stderr` instead of the log file.
    pub async fn start_full(
        models_dir: &Path,
        args: &[&str],
        env: &[(&str, &Path)],
        stderr: Option<Stdio>,
    ) -> Daemon {
        let state = tempfile::tempdir().unwrap();
        // Private whatever the test's umask: the daemon refuses a socket
        // directory others may write into.
        std::fs::set_permissions(
            state.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let socket = state.path().join("router.sock");
        let log = state.path().join("daemon.log");
        let stderr = stderr.unwrap_or_else(|| File::create(&log).unwrap().into());
        let child = Command::new(bin())
            .arg("serve")
            .arg("--models-dir")
            .arg(models_dir)
            .arg("--socket")
            .arg(&socket)
            .args(if args.contains(&"--watch-debounce-ms") {
                &[][..]
            } else {
                &["--watch-debounce-ms", "200"][..]
            })
            .args(args)
            .env("RUST_LOG", "llama_router=debug")
            // Crash reports go to the test's directory, not the user's.
            .env("STATE_DIRECTORY", state.path())
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let daemon = Daemon {
            child,
            socket,
            log,
            _state: state,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if daemon.socket.exists() {
                if let Ok(mut c) = daemon.try_client().await {
                    if c.list_models(ListModelsRequest {}).await.is_ok() {
                        return daemon;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("daemon did not come up; log:\n{}", daemon.log_text());
    }

    async fn try_client(
        &self,
    ) -> Result<ModelServiceClient<Channel>, llama_router::cli::client::ClientError> {
        llama_router::cli::client::connect(&self.socket.display().to_string()).await
    }

    /// A connected client.
    pub async fn client(&self) -> ModelServiceClient<Channel> {
        self.try_client().await.unwrap()
    }

    /// Tokens of `text` as a prompt of `model` (special tokens added and parsed).
    pub async fn prompt_tokens(&self, model: &str, text: &str) -> Vec<i32> {
        self.inference()
            .await
            .tokenize(pb::TokenizeRequest {
                model: model.into(),
                text: text.into(),
                add_special: true,
                parse_special: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tokens
    }

    /// A connected inference client.
    pub async fn inference(&self) -> InferenceServiceClient<Channel> {
        let channel = llama_router::cli::client::channel(&self.socket.display().to_string())
            .await
            .unwrap();
        InferenceServiceClient::new(channel)
    }

    /// The daemon's status.
    pub async fn status(&self) -> pb::StatusResponse {
        self.client()
            .await
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// A stream of every model state change from now on.
    pub async fn events(&self) -> tonic::Streaming<pb::ModelEvent> {
        self.client()
            .await
            .watch_events(pb::WatchEventsRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// What the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (without blocking the runtime, so this process's connections can
    /// close when the daemon drains) for the daemon to exit; panics after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "daemon still running {limit:?} after the signal; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs a CLI client command against this daemon.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .env("LLAMA_ROUTER_ENDPOINT", &self.socket)
            .output()
            .unwrap()
    }

    /// Runs a CLI client command against this daemon and parses its JSON
    /// output (panics with its stderr when it failed).
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The daemon's models by id.
    pub async fn models(&self) -> Vec<pb::Model> {
        self.client()
            .await
            .list_models(ListModelsRequest {})
            .await
            .unwrap()
            .into_inner()
            .models
    }

    /// One model, or None if not listed.
    pub async fn model(&self, id: &str) -> Option<pb::Model> {
        self.models().await.into_iter().find(|m| m.id == id)
    }

    /// Waits until `check` holds for the model list (panics after 10 s with the log).
    pub async fn wait_for(&self, what: &str, check: impl Fn(&[pb::Model]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let models = self.models().await;
            if check(&models) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; models: {models:#?}\nlog:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small valid model file.
pub fn tiny_model(path: &Path, name: &str) {
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("general.name", Value::String(name.into()))
        .kv("llama.context_length", Value::U32(2048))
        .tensor("token_embd.weight", GgmlType::Q8_0, &[64, 32])
        .tensor("output_norm.weight", GgmlType::F32, &[64])
        .write(path)
        .unwrap();
}

/// A valid model whose one tensor is `bytes` long, stored sparse (no disk used).
pub fn sparse_model(path: &Path, bytes: u64) {
    let header = GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .raw_tensor(TensorSpec {
            name: b"big.weight".to_vec(),
            dims: vec![bytes],
            type_id: GgmlType::I8 as u32,
            offset: Some(0),
            data_len: 0,
        })
        .to_bytes();
    std::fs::write(path, &header).unwrap();
    let data_offset = header.len() as u64;
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(data_offset + bytes)
        .unwrap();
    read_header(path).expect("sparse model must be valid");
}

/// State of a model as a lower-case name.
pub fn state(m: &pb::Model) -> &'static str {
    llama_router::api::convert::state_name(m.state)
}

/// `count` sparse copies of `model` in `dir` (`model-0000.gguf` ...): its real
/// header bytes at its real length, with no data on disk. Returns the header.
pub fn sparse_copies(model: &Path, dir: &Path, count: usize) -> llama_router::gguf::GgufHeader {
    use std::io::{Read, Write};
    let header = read_header(model).unwrap();
    let mut head = vec![0; header.data_offset as usize];
    File::open(model).unwrap().read_exact(&mut head).unwrap();
    for i in 0..count {
        let mut f = File::create(dir.join(format!("model-{i:04}.gguf"))).unwrap();
        f.write_all(&head).unwrap();
        f.set_len(header.file_len).unwrap();
    }
    header
}

/// The demo model for tests: `DEMO_MODEL`, else the cache `make demo-model` fills.
pub fn demo_model() -> PathBuf {
    let path = std::env::var_os("DEMO_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/llama-router/models/gemma-3-270m-q4_k_m.gguf")
        });
    assert!(
        path.is_file(),
        "the inference tests need the demo model at {} (run `make demo-model`, or set DEMO_MODEL)",
        path.display()
    );
    path
}

/// Puts the demo model into `dir` as `{id}.gguf` (a hard link when possible).
pub fn add_demo_model(dir: &Path, id: &str) -> PathBuf {
    let dest = dir.join(format!("{id}.gguf"));
    let source = demo_model();
    if std::fs::hard_link(&source, &dest).is_err() {
        std::fs::copy(&source, &dest).unwrap();
    }
    dest
}

/// What a generation stream delivered.
#[derive(Debug, Default)]
pub struct Generated {
    pub text: String,
    pub tokens: Vec<i32>,
    pub pieces: usize,
    pub finish: i32,
    pub usage: Option<pb::Usage>,
    pub error: String,
}

/// Reads a generation stream to its end.
pub async fn collect(
    stream: tonic::Streaming<pb::GenerateResponse>,
) -> Result<Generated, tonic::Status> {
    let mut stream = stream;
    let mut out = Generated::default();
    while let Some(piece) = stream.message().await? {
        out.text.push_str(&piece.text);
        out.tokens.extend(&piece.token_ids);
        out.pieces += 1;
        out.finish = piece.finish_reason;
        out.error = piece.error;
        if piece.usage.is_some() {
            out.usage = piece.usage;
        }
    }
    Ok(out)
}

/// A greedy generation request.
pub fn greedy(model: &str, prompt: &str, max_tokens: u32) -> pb::GenerateRequest {
    pb::GenerateRequest {
        model: model.into(),
        prompt: prompt.into(),
        max_tokens,
        sampling: Some(pb::SamplingParams {
            temperature: Some(0.0),
            ..Default::default()
        }),
        stop: vec![],
        ..Default::default()
    }
}

/// The demo model's path from `DEMO_MODEL` (benchmarks); exits with a hint when unset.
pub fn demo_model_from_env() -> PathBuf {
    std::env::var_os("DEMO_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            eprintln!("set DEMO_MODEL to the demo model's path (`make bench` does)");
            std::process::exit(1);
        })
}

/// Drops the page cache (benchmarks of cold reads); false when not root.
pub fn drop_caches() -> bool {
    Command::new("sync").status().is_ok_and(|s| s.success())
        && std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// Takes `path` out of the page cache: `drop_caches` where we may, else
/// `posix_fadvise(DONTNEED)` on the file, which any user may do (pages a
/// process still maps stay either way). False when neither worked.
#[allow(dead_code)]
pub fn evict_from_page_cache(path: &Path) -> bool {
    drop_caches() || fadvise_dontneed(path)
}

/// `posix_fadvise(DONTNEED)` on `path` alone: its clean pages leave the page
/// cache, the rest of it stays. False when the call failed.
#[allow(dead_code)]
pub fn fadvise_dontneed(path: &Path) -> bool {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    std::fs::File::open(path).is_ok_and(|file| {
        posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).is_ok()
    })
}

/// The middle of `samples` once sorted (zero when there are none).
#[allow(dead_code)]
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// One benchmark line: our time, the baseline's, and their ratio.
pub fn print_ratio(what: &str, ours: Duration, baseline_name: &str, baseline: Duration) {
    println!(
        "{what:<44} {:>10.3} ms   {baseline_name:<22} {:>9.3} ms   ratio {:>6.2}x",
        ours.as_secs_f64() * 1e3,
        baseline.as_secs_f64() * 1e3,
        ours.as_secs_f64() / baseline.as_secs_f64()
    );
}

/// A split set written the way gguf-split writes one: metadata in shard 1,
/// `split.*` keys in every shard, one tensor `t{i}` per shard.
pub fn write_split_set(dir: &Path, prefix: &str, count: u16) {
    for i in 0..count {
        let mut w = GgufWriter::new();
        if i == 0 {
            w = w.kv("general.architecture", Value::String("llama".into()));
        }
        w.kv("split.no", Value::U16(i))
            .kv("split.count", Value::U16(count))
            .kv("split.tensors.count", Value::I32(i32::from(count)))
            .tensor(&format!("t{i}"), GgmlType::F32, &[64])
            .write(&dir.join(format!("{prefix}-{:05}-of-{count:05}.gguf", i + 1)))
            .unwrap();
    }
}

/// A free loopback port (bound, then released for the daemon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request on a fresh loopback connection (`connection:
/// close`), waiting at most `timeout` for each read: the status code and the body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let out = String::from_utf8_lossy(&out).into_owned();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((code, body))
}

/// A field of /proc/PID/status in KiB (`VmHWM:` is the peak resident memory).
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
