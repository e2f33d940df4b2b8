//! Inference benchmarks, each printed as a ratio to a baseline measured in the same run.
//!
//! 1. Router overhead: tokens/s and time to first token of a greedy stream
//!    through the daemon (gRPC over its Unix socket, relayed to the worker
//!    process) vs the same engine (`llama_router::engine`) driven in-process
//!    with the same settings.
//! 2. Concurrency: aggregate tokens/s of 1, 4 and 8 concurrent streams on one
//!    model (`--parallel 8`), vs one stream.
//! 3. Swap: `--models-max 1`, two models alternating: time to first token
//!    right after a swap with the other model's file in the page cache (the
//!    host-RAM tier) vs cold from disk (`drop_caches`, needs root).
//!
//! `make bench` runs it; or `DEMO_MODEL=path cargo bench --bench inference`.

// A benchmark runs the happy path; any failure should abort it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../integration/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_router::engine::{EngineHandle, GenerateRequest, Sampling};
use llama_router::params::ModelParams;
use llama_router::proto::pb;
use support::{Daemon, greedy};

const PROMPT: &str =
    "Write a long story about a lighthouse keeper who finds a message in a bottle.";
const TOKENS: u32 = 128;
const ROUNDS: usize = 5;

/// One stream's timings.
#[derive(Debug, Clone, Copy)]
struct Run {
    ttft: Duration,
    tokens_per_second: f64,
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn threads() -> u32 {
    std::thread::available_parallelism().map_or(4, |n| n.get() as u32)
}

async fn in_process(engine: &EngineHandle) -> Run {
    let start = Instant::now();
    let prompt = engine.tokenize(PROMPT, true, true);
    let mut rx = engine
        .generate(GenerateRequest {
            prompt,
            max_tokens: TOKENS,
            sampling: Sampling {
                temperature: 0.0,
                ..Sampling::default()
            },
            stops: vec![],
            grammar: None,
            received: start,
            logprobs: None,
            special_text: false,
            cache_prompt: true,
        })
        .await
        .unwrap();
    let mut first = None;
    let mut count = 0u32;
    while let Some(piece) = rx.recv().await {
        count += piece.token_ids.len() as u32;
        first.get_or_insert_with(Instant::now);
        if piece.finish.is_some() {
            break;
        }
    }
    finish(start, first.unwrap(), count)
}

async fn through_daemon(d: &Daemon, model: &str, max_tokens: u32, prompt: &str) -> Run {
    let mut client = d.inference().await;
    let start = Instant::now();
    let request = pb::GenerateRequest {
        prompt: prompt.into(),
        ..greedy(model, prompt, max_tokens)
    };
    let mut stream = client.generate(request).await.unwrap().into_inner();
    let mut first = None;
    let mut count = 0u32;
    while let Some(piece) = stream.message().await.unwrap() {
        count += piece.token_ids.len() as u32;
        first.get_or_insert_with(Instant::now);
    }
    finish(start, first.unwrap(), count)
}

fn finish(start: Instant, first: Instant, count: u32) -> Run {
    let rest = first.elapsed().as_secs_f64();
    Run {
        ttft: first - start,
        tokens_per_second: f64::from(count.saturating_sub(1)) / rest,
    }
}

async fn bench_overhead(demo: &Path, models: &Path) {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
    let backend = Arc::new(LlamaBackend::init().unwrap());
    let model =
        Arc::new(LlamaModel::load_from_file(&backend, demo, &LlamaModelParams::default()).unwrap());
    let params = ModelParams {
        parallel: 4,
        ctx_size: 4096,
        batch_size: 512,
        threads: threads(),
        ..ModelParams::default()
    };
    let engine = EngineHandle::start(backend, model, params, 64).unwrap();
    let d = Daemon::start(
        models,
        &[
            "--parallel",
            "4",
            "--ctx-size",
            "4096",
            "--batch-size",
            "512",
        ],
    )
    .await;
    // Warm both (worker start, first allocations), then alternate rounds.
    in_process(&engine).await;
    through_daemon(&d, "gemma", TOKENS, PROMPT).await;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        base.push(in_process(&engine).await);
        ours.push(through_daemon(&d, "gemma", TOKENS, PROMPT).await);
    }
    let tps = |v: &[Run]| median(v.iter().map(|r| r.tokens_per_second).collect());
    let ttft = |v: &[Run]| median(v.iter().map(|r| r.ttft).collect());
    println!(
        "router overhead ({TOKENS} tokens, median of {ROUNDS}): {:.1} tok/s via daemon vs {:.1} tok/s in-process: ratio {:.3}",
        tps(&ours),
        tps(&base),
        tps(&ours) / tps(&base)
    );
    println!(
        "time to first token: {:.2} ms via daemon vs {:.2} ms in-process: overhead {:+.2} ms",
        ttft(&ours).as_secs_f64() * 1e3,
        ttft(&base).as_secs_f64() * 1e3,
        (ttft(&ours).as_secs_f64() - ttft(&base).as_secs_f64()) * 1e3
    );
}

async fn aggregate(d: &Daemon, streams: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..streams {
        let mut client = d.inference().await;
        let prompt = format!("{PROMPT} Chapter {i}:");
        tasks.push(tokio::spawn(async move {
            let mut stream = client
                .generate(greedy("gemma", &prompt, 64))
                .await
                .unwrap()
                .into_inner();
            let mut n = 0usize;
            while let Some(p) = stream.message().await.unwrap() {
                n += p.token_ids.len();
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn bench_concurrency(models: &Path) {
    let d = Daemon::start(models, &["--parallel", "8", "--ctx-size", "1024"]).await;
    aggregate(&d, 1).await; // warm up
    let one = aggregate(&d, 1).await;
    for streams in [1, 4, 8] {
        let tps = aggregate(&d, streams).await;
        println!(
            "concurrency: {streams} streams {tps:.1} tok/s aggregate vs 1 stream {one:.1} tok/s: ratio {:.2}",
            tps / one
        );
    }
}

async fn bench_swap(demo: &Path) {
    let dir = tempfile::tempdir().unwrap();
    // Two distinct files (hard links would share one page cache).
    for id in ["a", "b"] {
        std::fs::copy(demo, dir.path().join(format!("{id}.gguf"))).unwrap();
    }
    let d = Daemon::start(dir.path(), &["--models-max", "1"]).await;
    through_daemon(&d, "a", 8, "Hello").await;
    through_daemon(&d, "b", 8, "Hello").await;
    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let (from, to) = if round % 2 == 0 {
            ("b", "a")
        } else {
            ("a", "b")
        };
        through_daemon(&d, from, 8, "Hello").await;
        warm.push(through_daemon(&d, to, 8, "Hello").await.ttft);
        through_daemon(&d, from, 8, "Hello").await;
        if !support::drop_caches() {
            println!("swap: cannot drop the page cache (needs root); cold swap not measured");
            return;
        }
        cold.push(through_daemon(&d, to, 8, "Hello").await.ttft);
    }
    let (warm, cold) = (median(warm), median(cold));
    println!(
        "swap (--models-max 1): first token {:.1} ms with the model in the host-RAM tier vs {:.1} ms cold from disk: ratio {:.2}",
        warm.as_secs_f64() * 1e3,
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() / cold.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let demo = support::demo_model_from_env();
    let models = tempfile::tempdir().unwrap();
    support::add_demo_model(models.path(), "gemma");
    bench_overhead(&demo, models.path()).await;
    bench_concurrency(models.path()).await;
    bench_swap(&demo).await;
}
