//! The load harness: the real daemon on the demo model, N concurrent HTTP/1.1
//! clients (default 1,000) on `/v1/completions` for a bounded time, in rounds
//! (default 2), so that memory growth between rounds shows.
//!
//! Each client sends requests one after another on a kept-alive connection,
//! cycling through streamed (SSE, read to `[DONE]`), whole (JSON) and streamed
//! but hung up after the first token; it backs off after a refusal as
//! `Retry-After` says. Per round it prints p50/p99 time to first token,
//! refusals (429/503) and failures by kind, and the daemon's and workers'
//! peak RSS and descriptor counts; then the ratio of the last round's peak
//! RSS to the first's (goal <= 1.10) and whether anything failed other than
//! an explicit refusal (goal: nothing). Exit status 1 when a goal is missed,
//! 2 when the daemon could not be started.
//!
//! `make load` (release build), or `cargo bench --profile dev --bench load --
//! --clients 200 --seconds 20`; `--help` lists the knobs.

// A harness: setup failures may abort it; the daemon's answers never do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod client;
mod daemon;
mod http;
mod procs;
mod tally;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use client::{Client, Mode};
use procs::{Peaks, Sampler};
use tally::{Next, Tally};
use tokio::task::JoinSet;

/// The request mix each client cycles through.
const MODES: [Mode; 4] = [Mode::Stream, Mode::Whole, Mode::Stream, Mode::Disconnect];
/// The id of the demo model in the harness's models directory.
const MODEL: &str = "gemma";
/// A client's first back-off after a refusal or failure without `Retry-After`; it doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest back-off, also the cap on `Retry-After`.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Goal: the last round's peak RSS over the first's.
const RSS_GOAL: f64 = 1.10;

/// Load harness: N concurrent HTTP clients against the real daemon.
#[derive(Debug, Clone, Parser)]
#[command(name = "load")]
struct Args {
    /// Concurrent clients.
    #[arg(long, env = "LOAD_CLIENTS", default_value_t = 1000)]
    clients: usize,
    /// Seconds each round sends new requests (those in flight then may finish).
    #[arg(long, env = "LOAD_SECONDS", default_value_t = 60)]
    seconds: u64,
    /// Rounds, one after another on the same daemon.
    #[arg(long, env = "LOAD_ROUNDS", default_value_t = 2)]
    rounds: usize,
    /// `max_tokens` of each request.
    #[arg(long, env = "LOAD_MAX_TOKENS", default_value_t = 16)]
    max_tokens: u32,
    /// Seconds one request may take, connect to last byte, before it counts as a timeout.
    #[arg(long, env = "LOAD_REQUEST_TIMEOUT", default_value_t = 30)]
    request_timeout: u64,
    /// The daemon binary (default: the one cargo built with this harness).
    #[arg(long, env = "ROUTER_BIN")]
    router_bin: Option<PathBuf>,
    /// The demo model (default: ~/.cache/llama-router/models/gemma-3-270m-q4_k_m.gguf).
    #[arg(long, env = "DEMO_MODEL")]
    model: Option<PathBuf>,
    /// Start the daemon with this soft RLIMIT_NOFILE instead of the hard limit.
    #[arg(long, env = "LOAD_DAEMON_NOFILE")]
    daemon_nofile: Option<u64>,
    /// An extra flag for `llama-router serve` (repeat it; e.g. `--daemon-arg=--parallel=8`).
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout)
    }
}

/// A small deterministic jitter source per client (no `rand` dependency).
struct Jitter(u64);

impl Jitter {
    /// `d` scaled by a factor in [0.5, 1.5).
    fn spread(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        d.mul_f64(0.5 + (self.0 % 1000) as f64 / 1000.0)
    }
}

/// One client: requests until `deadline`, each bounded by the request timeout.
async fn user(i: usize, addr: SocketAddr, args: Args, start: Instant, deadline: Instant) -> Tally {
    // Ramp up over a second (or a tenth of a short round) instead of one SYN burst.
    let ramp = Duration::from_secs(args.seconds).min(Duration::from_secs(10)) / 10;
    let divisor = u32::try_from(args.clients.max(1)).unwrap_or(u32::MAX);
    let offset = ramp / divisor * u32::try_from(i).unwrap_or(u32::MAX);
    tokio::time::sleep_until((start + offset).into()).await;
    let mut client = Client::new(addr);
    let mut tally = Tally::default();
    let mut jitter = Jitter(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
    let mut k = 0usize;
    let mut streak = 0u32;
    while Instant::now() < deadline {
        let mode = MODES[(i + k) % MODES.len()];
        let body = serde_json::json!({
            "model": MODEL,
            "prompt": format!("Write one sentence about the number {}.", i * 7 + k),
            "max_tokens": args.max_tokens,
            "stream": mode != Mode::Whole,
        })
        .to_string();
        k += 1;
        let outcome = client
            .post("/v1/completions", &body, mode, args.timeout())
            .await;
        let pause = match tally.add(outcome) {
            Next::Go => {
                streak = 0;
                continue;
            }
            // As OpenAI's client libraries do: as told, else exponential from 250 ms to 4 s.
            Next::BackOff(Some(told)) => told.min(MAX_BACKOFF),
            Next::BackOff(None) => {
                streak = (streak + 1).min(5);
                FIRST_BACKOFF * (1 << (streak - 1))
            }
        };
        let until = (Instant::now() + jitter.spread(pause)).min(deadline);
        tokio::time::sleep_until(until.into()).await;
    }
    tally.reconnects = client.reconnects;
    tally
}

/// What one round came to.
struct Round {
    tally: Tally,
    peaks: Peaks,
    /// What was wrong with the daemon right after the round (empty: nothing).
    problems: Vec<String>,
}

async fn round(n: usize, d: &mut daemon::Daemon, args: &Args) -> Round {
    println!(
        "\n== round {n}: {} clients, {} s of requests (each request at most {} s) ==",
        args.clients, args.seconds, args.request_timeout
    );
    let sampler = Sampler::start(d.pid());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut tasks = JoinSet::new();
    for i in 0..args.clients {
        tasks.spawn(user(i, d.addr, args.clone(), start, deadline));
    }
    let mut tally = Tally::default();
    // Every request is bounded, so every client ends by this; past it, a harness bug.
    let bound = deadline + args.timeout() * 2 + Duration::from_secs(10);
    let mut problems = Vec::new();
    loop {
        match tokio::time::timeout_at(bound.into(), tasks.join_next()).await {
            Ok(Some(Ok(t))) => tally.merge(t),
            Ok(Some(Err(e))) => problems.push(format!("a client task failed: {e}")),
            Ok(None) => break,
            Err(_) => {
                problems.push(format!(
                    "{} clients still running past the bound",
                    tasks.len()
                ));
                tasks.abort_all();
                break;
            }
        }
    }
    let peaks = sampler.stop();
    let took = start.elapsed().as_secs_f64();
    let served = tally.streamed + tally.whole + tally.disconnected;
    println!(
        "  took         {took:.1} s (the last requests may run up to the request timeout): {:.1} served/s, {:.0} requests/s",
        served as f64 / took,
        tally.sent as f64 / took
    );
    tally.print();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let source = if peaks.hwm_reset {
        "VmHWM since the round began"
    } else {
        "sampled VmRSS"
    };
    println!(
        "  daemon       pid {}: peak RSS {:.1} MiB, peak descriptors {} ({source})",
        d.pid(),
        mib(peaks.daemon.rss_kib),
        peaks.daemon.fds
    );
    println!(
        "  workers      pids {:?}: peak RSS {:.1} MiB (summed), peak descriptors {}",
        peaks.workers.keys().collect::<Vec<_>>(),
        mib(peaks.workers_rss_kib()),
        peaks.workers_fds()
    );
    // Let cancelled generations wind down before checking the daemon.
    tokio::time::sleep(Duration::from_secs(2)).await;
    problems.extend(d.check(MODEL).await);
    if problems.is_empty() {
        println!(
            "  after        daemon running, /health 200, {MODEL} listed, no request left active"
        );
    }
    for p in &problems {
        println!("  PROBLEM      {p}");
    }
    Round {
        tally,
        peaks,
        problems,
    }
}

fn summary(args: &Args, d: &daemon::Daemon, rounds: &[Round]) -> bool {
    println!(
        "\n== summary: {} clients, {} s per round, {} ==",
        args.clients,
        args.seconds,
        d.bin.display()
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    for (i, r) in rounds.iter().enumerate() {
        let t = &r.tally;
        println!(
            "  round {}: served {}, refused {}, failed {}; peak RSS daemon {:.1} MiB, workers {:.1} MiB; peak descriptors daemon {}, worker {}",
            i + 1,
            t.streamed + t.whole + t.disconnected,
            t.refusals(),
            t.failures(),
            mib(r.peaks.daemon.rss_kib),
            mib(r.peaks.workers_rss_kib()),
            r.peaks.daemon.fds,
            r.peaks.workers_fds()
        );
    }
    let mut ok = true;
    if let (Some(first), Some(last), true) = (rounds.first(), rounds.last(), rounds.len() > 1) {
        let ratio = |a: u64, b: u64| {
            if a == 0 {
                f64::NAN
            } else {
                b as f64 / a as f64
            }
        };
        let daemon = ratio(first.peaks.daemon.rss_kib, last.peaks.daemon.rss_kib);
        let workers = ratio(first.peaks.workers_rss_kib(), last.peaks.workers_rss_kib());
        let met = daemon <= RSS_GOAL && workers <= RSS_GOAL;
        ok &= met;
        println!(
            "  peak RSS, round {} / round 1: daemon {daemon:.3}, workers {workers:.3} (goal <= {RSS_GOAL:.2}): {}",
            rounds.len(),
            if met { "met" } else { "MISSED" }
        );
    }
    let failures: u64 = rounds.iter().map(|r| r.tally.failures()).sum();
    let problems: usize = rounds.iter().map(|r| r.problems.len()).sum();
    let clean = failures == 0 && problems == 0;
    ok &= clean;
    println!(
        "  failures other than 429/503 refusals: {failures}, daemon problems after a round: {problems} (goal 0): {}",
        if clean { "met" } else { "MISSED" }
    );
    println!("  result: {}", if ok { "PASS" } else { "FAIL" });
    ok
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let (before, now) = daemon::raise_nofile();
    println!(
        "load harness: {} clients x {} round(s) of {} s, max_tokens {}, request timeout {} s",
        args.clients, args.rounds, args.seconds, args.max_tokens, args.request_timeout
    );
    println!("descriptors: soft RLIMIT_NOFILE {before} -> {now} (the daemon inherits it)");
    if (now as usize) < args.clients + 64 {
        println!(
            "  warning: {now} descriptors may not hold {} client sockets",
            args.clients
        );
    }
    let mut d = match daemon::Daemon::start(&args).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::from(2);
        }
    };
    let mut rounds = Vec::new();
    for n in 1..=args.rounds.max(1) {
        let r = round(n, &mut d, &args).await;
        let dead = !d.running();
        rounds.push(r);
        if dead {
            println!("  the daemon is gone: no further rounds");
            break;
        }
    }
    let ok = summary(&args, &d, &rounds);
    if !ok {
        println!("\nlast lines of the daemon's log ({}):", d.log.display());
        println!("{}", d.log_tail(30));
    }
    d.stop().await;
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
