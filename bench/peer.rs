//! llama-router against llama.cpp's own `llama-server` in router mode, side
//! by side in one run, on the same models, cores, parallelism and context,
//! over the same OpenAI HTTP API (`/v1/completions`, greedy):
//!
//! - TTFT: a one-token completion of a warm model;
//! - 1 stream: tokens per second of one 64-token completion;
//! - 8 streams: aggregate tokens per second of 8 at once;
//! - swap: with `--models-max 1` and two models alternating, from the request
//!   for the one not running to its first token, with the page cache warm,
//!   and cold (the file evicted first: `drop_caches`, or
//!   `posix_fadvise(DONTNEED)` without root).
//!
//! Each figure is the median of several runs (the speeds in rounds that
//! alternate between the two servers, both up); the table prints ours, the
//! peer's and the ratio. A second run of ours with `--park-bytes` holding
//! one model measures the swap again with the evicted model parked (its
//! worker kept without a context, woken by the request): a budget the user
//! sets, so it is its own row, not our default. `make bench-peer` builds the peer once
//! (`scripts/build-peer.sh`) and runs this with `PEER_BIN` set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../integration/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CTX: u32 = 512;
const PARALLEL: u32 = 8;
const ROUNDS: usize = 5;
const TOKENS: u32 = 64;
const PROMPT: &str = "Once upon a time, in a small village by the sea,";
const TIMEOUT: Duration = Duration::from_secs(300);

/// One server under test.
struct Server {
    name: &'static str,
    port: u16,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn threads() -> String {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .to_string()
}

/// Our daemon, with `extra` flags.
fn ours(models: &Path, state: &Path, extra: &[&str]) -> Server {
    let port = support::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_llama-router"))
        .args(["serve", "--models-dir"])
        .arg(models)
        .arg("--socket")
        .arg(state.join("router.sock"))
        .args(["--http-port", &port.to_string(), "--models-max", "1"])
        .args([
            "--ctx-size",
            &CTX.to_string(),
            "--parallel",
            &PARALLEL.to_string(),
        ])
        .args(["--threads", &threads(), "--gpu-layers", "0"])
        .args(extra)
        .env("STATE_DIRECTORY", state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_up(Server {
        name: "llama-router",
        port,
        child,
    })
}

fn peer(bin: &Path, models: &Path) -> Server {
    let port = support::free_port();
    // llama-server's -c is the context of all slots together.
    let child = Command::new(bin)
        .arg("--models-dir")
        .arg(models)
        .args([
            "--models-max",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args([
            "-c",
            &(CTX * PARALLEL).to_string(),
            "-np",
            &PARALLEL.to_string(),
        ])
        .args(["-t", &threads(), "-ngl", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_up(Server {
        name: "llama-server",
        port,
        child,
    })
}

fn wait_up(server: Server) -> Server {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok((200, _)) =
            support::http(server.port, "GET", "/health", "", Duration::from_secs(2))
        {
            return server;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} did not come up on port {}", server.name, server.port);
}

/// One greedy completion: its wall time and the tokens it generated.
fn complete(server: &Server, model: &str, max_tokens: u32) -> (Duration, u64) {
    let body = serde_json::json!({
        "model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0,
    })
    .to_string();
    let start = Instant::now();
    let (code, text) = support::http(server.port, "POST", "/v1/completions", &body, TIMEOUT)
        .unwrap_or_else(|e| panic!("{}: {e}", server.name));
    let took = start.elapsed();
    assert_eq!(code, 200, "{}: {text}", server.name);
    // Chunked or not, the JSON object is the body's outermost braces.
    let json = text
        .find('{')
        .zip(text.rfind('}'))
        .and_then(|(a, b)| text.get(a..=b))
        .unwrap_or("{}");
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let tokens = value
        .pointer("/usage/completion_tokens")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    (took, tokens)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The figures of one server.
#[derive(Debug, Clone, Copy)]
struct Figures {
    ttft_ms: f64,
    one_stream: f64,
    eight_streams: f64,
    swap_ms: f64,
    cold_swap_ms: f64,
}

/// TTFT, one stream's and 8 streams' tokens per second of each server, the
/// medians of rounds that take turns: round `r` measures every server before
/// round `r + 1` starts, so a host whose speed drifts (a shared machine)
/// moves both sides alike instead of tilting the ratio.
fn speeds(servers: [&Server; 2]) -> [(f64, f64, f64); 2] {
    for server in servers {
        warm(server);
    }
    let mut samples = [(); 2].map(|()| (Vec::new(), Vec::new(), Vec::new()));
    for _ in 0..ROUNDS {
        for (server, (ttft, one, eight)) in servers.iter().zip(samples.iter_mut()) {
            ttft.push(complete(server, "a", 1).0.as_secs_f64() * 1e3);
            let (took, tokens) = complete(server, "a", TOKENS);
            one.push(tokens as f64 / took.as_secs_f64());
            let start = Instant::now();
            let tokens: u64 = std::thread::scope(|s| {
                let runs: Vec<_> = (0..PARALLEL)
                    .map(|_| s.spawn(|| complete(server, "a", TOKENS).1))
                    .collect();
                runs.into_iter().map(|r| r.join().unwrap()).sum()
            });
            eight.push(tokens as f64 / start.elapsed().as_secs_f64());
        }
    }
    samples.map(|(ttft, one, eight)| (median(ttft), median(one), median(eight)))
}

/// Both models loaded once (first loads, kernel and page caches); "a" last.
fn warm(server: &Server) {
    complete(server, "a", 4);
    complete(server, "b", 4);
    complete(server, "a", 4);
}

/// A server's figures: its `speed` and its swaps, warm and cold. It must be
/// the only server up: another one's mappings would keep a file in the page
/// cache that a cold swap evicts.
fn measure(server: &Server, models: &Path, speed: (f64, f64, f64)) -> Figures {
    warm(server);
    let mut running = "a";
    let swap_ms = swaps(server, models, &mut running, ROUNDS, false);
    let cold_swap_ms = swaps(server, models, &mut running, 3, true);
    Figures {
        ttft_ms: speed.0,
        one_stream: speed.1,
        eight_streams: speed.2,
        swap_ms,
        cold_swap_ms,
    }
}

/// The median time, over `rounds` swaps, from the request to the first
/// token: each request is for the model not `running`, which then is.
/// `cold`: its file is evicted from the page cache first.
fn swaps(
    server: &Server,
    models: &Path,
    running: &mut &'static str,
    rounds: usize,
    cold: bool,
) -> f64 {
    let mut took = Vec::new();
    for _ in 0..rounds {
        let to = if *running == "a" { "b" } else { "a" };
        if cold && !support::evict_from_page_cache(&models.join(format!("{to}.gguf"))) {
            println!(
                "{}: the model file could not be evicted; the cold swap is warm",
                server.name
            );
        }
        took.push(complete(server, to, 1).0.as_secs_f64() * 1e3);
        *running = to;
    }
    median(took)
}

/// A model's recent log lines (ours: `GET /models/{id}/logs`), as
/// (unix ms, text), oldest first.
fn log_lines(server: &Server, model: &str) -> Vec<(u64, String)> {
    let path = format!("/models/{model}/logs?lines=500");
    let Ok((200, body)) = support::http(server.port, "GET", &path, "", TIMEOUT) else {
        return Vec::new();
    };
    let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    value
        .get("lines")
        .and_then(serde_json::Value::as_array)
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| {
                    let at = l.get("at_unix_ms")?.as_u64()?;
                    Some((at, l.get("text")?.as_str()?.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where our swap's time goes, from the daemon's own log lines (their
/// arrival times, to the millisecond): the old worker's stop, the new one's
/// start (the spare worker handed its command line, else a spawn) up to
/// llama.cpp's first line, llama.cpp's metadata and vocabulary,
/// its tensors (mapped, with the CPU weight repack), context and KV
/// allocation up to READY, then prompt and first token.
fn swap_breakdown(server: &Server) {
    complete(server, "a", 1);
    let asked = unix_ms();
    let (took, _) = complete(server, "b", 1);
    let done = asked + u64::try_from(took.as_millis()).unwrap_or(0);
    let old = log_lines(server, "a");
    let new = log_lines(server, "b");
    // The times, after the request, of the lines that contain `what`.
    let after = |lines: &[(u64, String)], what: &str| -> Vec<u64> {
        lines
            .iter()
            .filter(|(at, text)| *at >= asked && text.contains(what))
            .map(|(at, _)| *at)
            .collect()
    };
    let stopped = after(&old, "ended").first().copied();
    let spawned = after(&new, "worker started").first().copied();
    let first_line = after(&new, "llama.cpp::").first().copied();
    let tensors = after(&new, "loading model tensors").first().copied();
    let loaded = after(&new, "load_tensors").last().copied();
    let ready = after(&new, "worker ready").first().copied();
    let (Some(stopped), Some(spawned), Some(first), Some(tensors), Some(loaded), Some(ready)) =
        (stopped, spawned, first_line, tensors, loaded, ready)
    else {
        println!("swap breakdown: the daemon's log lines were not all found");
        return;
    };
    let ms = |a: u64, b: u64| b.saturating_sub(a);
    println!(
        "swap breakdown (llama-router, ms): request -> old worker stopped {}, -> new worker started (the spare, else spawned) {}, -> llama.cpp's first line {}, metadata + vocabulary {}, tensors (mapped, CPU repack) {}, context + KV + warm-up to READY {}, READY -> first token {}; total {}",
        ms(asked, stopped),
        ms(stopped.min(spawned), spawned),
        ms(spawned, first),
        ms(first, tensors),
        ms(tensors, loaded),
        ms(loaded, ready),
        ms(ready, done),
        ms(asked, done)
    );
}

/// The swap with the evicted model parked: warm and cold medians, and
/// where the time of one goes (the request, the worker's wake, the first
/// token).
fn parked_swaps(server: &Server, models: &Path) -> (f64, f64) {
    complete(server, "a", 4);
    complete(server, "b", 4);
    complete(server, "a", 4);
    let mut running = "a";
    let warm = swaps(server, models, &mut running, ROUNDS, false);
    let cold = swaps(server, models, &mut running, 3, true);
    let to = if running == "a" { "b" } else { "a" };
    let asked = unix_ms();
    let (took, _) = complete(server, to, 1);
    let done = asked + u64::try_from(took.as_millis()).unwrap_or(0);
    let woke = log_lines(server, to)
        .into_iter()
        .find(|(at, text)| *at >= asked && text.contains("worker woke"))
        .map(|(at, _)| at);
    match woke {
        Some(woke) => println!(
            "parked swap breakdown (llama-router --park-bytes, ms): request -> woken (context + KV + warm-up) {}, -> first token {}; total {}",
            woke.saturating_sub(asked),
            done.saturating_sub(woke),
            done.saturating_sub(asked)
        ),
        None => println!("parked swap breakdown: the worker's wake line was not found"),
    }
    (warm, cold)
}

/// A daemon's own state directory (its socket, crash reports): 0700.
fn state_dir() -> tempfile::TempDir {
    let state = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        state.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    state
}

fn main() {
    let Some(peer_bin) = std::env::var_os("PEER_BIN") else {
        println!(
            "bench peer: set PEER_BIN to a llama-server binary (`make bench-peer` builds one)"
        );
        return;
    };
    let demo = support::demo_model_from_env();
    let models = tempfile::tempdir().unwrap();
    // Two distinct files (hard links would share one page cache).
    for id in ["a", "b"] {
        std::fs::copy(&demo, models.path().join(format!("{id}.gguf"))).unwrap();
    }
    let state = state_dir();
    // Both up at once (the one not being measured is idle), so that their
    // speeds are measured in alternating rounds; then each alone for its swaps.
    let [speed, peer_speed] = {
        let server = ours(models.path(), state.path(), &[]);
        let other = peer(Path::new(&peer_bin), models.path());
        speeds([&server, &other])
    };
    let us = {
        let server = ours(models.path(), state.path(), &[]);
        let figures = measure(&server, models.path(), speed);
        swap_breakdown(&server);
        figures
    };
    let them = {
        let server = peer(Path::new(&peer_bin), models.path());
        measure(&server, models.path(), peer_speed)
    };
    let parked = {
        let state = state_dir();
        let one_model = std::fs::metadata(&demo).unwrap().len().to_string();
        let server = ours(models.path(), state.path(), &["--park-bytes", &one_model]);
        parked_swaps(&server, models.path())
    };
    println!(
        "peer: {} vs {}; {} cores, --parallel {PARALLEL}, ctx {CTX} per slot, median of {ROUNDS}",
        llama_router::cli::VERSION,
        Path::new(&peer_bin).display(),
        threads()
    );
    println!(
        "{:<14} {:>10} {:>18} {:>20} {:>8} {:>22} {:>16}",
        "",
        "TTFT ms",
        "tok/s (1 stream)",
        "8 streams aggregate",
        "x8/x1",
        "swap -> first token ms",
        "cold swap ms"
    );
    for (name, f) in [("llama-router", us), ("llama-server", them)] {
        println!(
            "{name:<14} {:>10.1} {:>18.1} {:>20.1} {:>8.2} {:>22.1} {:>16.1}",
            f.ttft_ms,
            f.one_stream,
            f.eight_streams,
            f.eight_streams / f.one_stream,
            f.swap_ms,
            f.cold_swap_ms
        );
    }
    println!(
        "{:<14} {:>10.2} {:>18.2} {:>20.2} {:>8} {:>22.2} {:>16.2}",
        "ratio",
        us.ttft_ms / them.ttft_ms,
        us.one_stream / them.one_stream,
        us.eight_streams / them.eight_streams,
        "",
        us.swap_ms / them.swap_ms,
        us.cold_swap_ms / them.cold_swap_ms
    );
    println!(
        "{:<14} {:>10} {:>18} {:>20} {:>8} {:>22.1} {:>16.1}",
        "parked", "", "", "", "", parked.0, parked.1
    );
    println!(
        "{:<14} {:>10} {:>18} {:>20} {:>8} {:>22.2} {:>16.2}",
        "parked ratio",
        "",
        "",
        "",
        "",
        parked.0 / them.swap_ms,
        parked.1 / them.cold_swap_ms
    );
}
