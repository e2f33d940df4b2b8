//! Daemon benchmarks, each printed as a ratio to a baseline measured in the same run.
//!
//! 1. Catalog scan of 1,000 models (sparse copies of the demo model: real
//!    headers, real lengths): a first scan (nothing in the header cache; the
//!    page cache as the copies left it) and a rescan of unchanged files, vs
//!    plain `read`s of the same header bytes.
//! 2. ListModels throughput over the Unix socket with 1,000 models, 8
//!    concurrent clients, vs GetStatus (the cheapest call) in the same run.
//! 3. Load-to-ready of the demo model with a cold page cache vs
//!    `cat FILE > /dev/null`, also cold: once with everything cold
//!    (`echo 3 > /proc/sys/vm/drop_caches`), once with the model file alone
//!    cold (`posix_fadvise(DONTNEED)`, the daemon's own code staying resident).
//!
//! `make bench` runs it; or `DEMO_MODEL=path cargo bench --bench daemon`.

// A benchmark runs the happy path; any failure should abort it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../integration/support/mod.rs"]
mod support;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use llama_router::catalog::HeaderCache;
use llama_router::catalog::scan::scan;
use llama_router::gguf::HeaderLimits;
use llama_router::proto::pb;
use support::Daemon;
use tokio_stream::StreamExt;

const MODELS: usize = 1000;
const CLIENTS: usize = 8;
const RPC_SECONDS: u64 = 3;

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn bench_catalog(dir: &Path, header_len: u64) {
    let paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let plain = timed(|| {
        for p in &paths {
            let mut buf = Vec::with_capacity(header_len as usize);
            File::open(p)
                .unwrap()
                .take(header_len)
                .read_to_end(&mut buf)
                .unwrap();
        }
    });
    let mut cache = HeaderCache::default();
    let mut listed = 0;
    let caps = HeaderLimits::default();
    let mut scan_all = || scan(dir, &[], &mut cache, Duration::ZERO, &caps).unwrap();
    let cold = timed(|| listed = scan_all().entries.len());
    assert_eq!(listed, MODELS);
    let warm = timed(|| listed = scan_all().entries.len());
    assert_eq!(listed, MODELS);
    support::print_ratio(
        &format!("catalog scan, {MODELS} models (first)"),
        cold,
        "plain header reads",
        plain,
    );
    support::print_ratio(
        &format!("catalog rescan, {MODELS} unchanged"),
        warm,
        "plain header reads",
        plain,
    );
    println!(
        "  per model: first scan {:.3} ms, rescan {:.4} ms, plain read {:.3} ms",
        cold.as_secs_f64() * 1e3 / MODELS as f64,
        warm.as_secs_f64() * 1e3 / MODELS as f64,
        plain.as_secs_f64() * 1e3 / MODELS as f64
    );
}

/// Calls per second of `call` from `CLIENTS` concurrent connections.
async fn throughput<F, Fut>(d: &Daemon, call: F) -> f64
where
    F: Fn(
            llama_router::proto::pb::model_service_client::ModelServiceClient<
                tonic::transport::Channel,
            >,
        ) -> Fut
        + Clone
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(RPC_SECONDS);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let client = d.client().await;
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                call(client.clone()).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / RPC_SECONDS as f64
}

async fn bench_list_models(dir: &Path) {
    let d = Daemon::start(dir, &[]).await;
    assert_eq!(d.models().await.len(), MODELS);
    let list = throughput(&d, |mut c| async move {
        c.list_models(pb::ListModelsRequest {}).await.unwrap();
    })
    .await;
    let status = throughput(&d, |mut c| async move {
        c.get_status(pb::GetStatusRequest {}).await.unwrap();
    })
    .await;
    println!(
        "ListModels ({MODELS} models, {CLIENTS} clients)    {list:>10.0} /s   GetStatus baseline {status:>12.0} /s   ratio {:>6.3}",
        list / status
    );
}

/// Rounds of the cold load and of `cat`, taken in turns (a shared host's
/// drift then moves both alike); the medians are compared.
const COLD_ROUNDS: usize = 9;

/// How a round makes the model cold.
#[derive(Clone, Copy)]
enum Cooling {
    /// `drop_caches`: everything is cold, the daemon's own code pages too
    /// (a daemon that has run a while has them resident; `cat` is tiny).
    Everything,
    /// `posix_fadvise(DONTNEED)` on the model file alone: what a running
    /// daemon meets when it loads a model nobody has read lately.
    ModelFile,
}

impl Cooling {
    fn apply(self, model: &Path) -> bool {
        match self {
            Cooling::Everything => support::drop_caches(),
            Cooling::ModelFile => support::fadvise_dontneed(model),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Cooling::Everything => "all cold",
            Cooling::ModelFile => "file cold",
        }
    }
}

/// One load of `demo` to ready (host tier only, no worker), then its unload.
async fn load_to_ready(d: &Daemon) -> Duration {
    let mut client = d.client().await;
    let started = Instant::now();
    let mut stream = client
        .load_model(pb::LoadModelRequest {
            id: "demo".into(),
            dry_run: false,
            start_worker: false,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(p) = stream.next().await {
        if p.unwrap().model.is_some() {
            break;
        }
    }
    let took = started.elapsed();
    client
        .unload_model(pb::UnloadModelRequest { id: "demo".into() })
        .await
        .unwrap();
    took
}

async fn bench_cold_load(demo: &Path) {
    // Beside the build, on disk: a tmpfs /tmp would never be cold.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let model = dir.path().join("demo.gguf");
    std::fs::copy(demo, &model).unwrap();
    let d = Daemon::start(dir.path(), &[]).await;
    let cat = || {
        timed(|| {
            let status = std::process::Command::new("cat")
                .arg(&model)
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        })
    };
    for cooling in [Cooling::Everything, Cooling::ModelFile] {
        let mut cold = true;
        let mut loads = Vec::with_capacity(COLD_ROUNDS);
        let mut cats = Vec::with_capacity(COLD_ROUNDS);
        for _ in 0..COLD_ROUNDS {
            cold &= cooling.apply(&model);
            loads.push(load_to_ready(&d).await);
            cold &= cooling.apply(&model);
            cats.push(cat());
        }
        if !cold {
            println!(
                "  ({}: cannot evict the page cache here; the numbers below are warm)",
                cooling.label()
            );
        }
        support::print_ratio(
            &format!(
                "load-to-ready, demo ({}), median of {COLD_ROUNDS}",
                cooling.label()
            ),
            support::median(loads),
            "cat FILE > /dev/null",
            support::median(cats),
        );
    }
}

fn main() {
    let demo = support::demo_model_from_env();
    let dir = tempfile::tempdir().unwrap();
    let header_len = support::sparse_copies(&demo, dir.path(), MODELS).data_offset;
    bench_catalog(dir.path(), header_len);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(bench_list_models(dir.path()));
    rt.block_on(bench_cold_load(&demo));
}
