//! GGUF header benchmarks, each printed as a ratio to a plain `read` of the
//! same header bytes measured in the same run (page cache warm for both).
//!
//! 1. The demo model: `read_header` (header-only read + parse + validation,
//!    every value decoded, as `inspect` reads), the summary read the catalog
//!    and the loader make, and `GgufModel::open`, each vs reading its header
//!    bytes into a buffer.
//! 2. The catalog: summary reads of 1,000 copies of the demo model (sparse
//!    files with the real header and the real length) vs reading each copy's
//!    header bytes, warm and then cold (the copies dropped from the page cache
//!    before each round: `drop_caches` as root, else `posix_fadvise`).
//!
//! Run with `make bench` (it fetches the demo model) or
//! `DEMO_MODEL=path cargo bench --bench gguf_header`.

// A benchmark runs the happy path; any failure should abort it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../integration/support/mod.rs"]
mod support;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use llama_router::gguf::{Decode, GgufModel, HeaderLimits, read_header, read_header_with};

/// Timed rounds per measurement (median reported); the catalog scan uses fewer.
const ROUNDS: usize = 15;
const CATALOG_ROUNDS: usize = 3;
const COPIES: usize = 1000;

/// Median over `rounds` of running `f` once, after one warm-up run.
fn time_rounds(rounds: usize, f: impl FnMut()) -> Duration {
    time_prepared(rounds, || {}, f)
}

/// Median over `rounds` of running `f` once, each after `prepare` (not timed).
fn time_prepared(rounds: usize, mut prepare: impl FnMut(), mut f: impl FnMut()) -> Duration {
    f();
    support::median(
        (0..rounds)
            .map(|_| {
                prepare();
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

/// Takes every copy out of the page cache; false when that is not allowed here.
fn evict(paths: &[PathBuf]) -> bool {
    support::drop_caches()
        || paths
            .iter()
            .all(|p| support::evict_from_page_cache(p.as_path()))
}

/// The read the catalog makes of each model.
fn summary_of(path: &Path) {
    drop(GgufModel::open_with(path, &HeaderLimits::default(), Decode::Summary).unwrap());
}

fn time(f: impl FnMut()) -> Duration {
    time_rounds(ROUNDS, f)
}

fn plain_read(path: &Path, len: u64) -> usize {
    let mut buf = Vec::with_capacity(len as usize);
    File::open(path)
        .unwrap()
        .take(len)
        .read_to_end(&mut buf)
        .unwrap();
    buf.len()
}

fn main() {
    let demo = support::demo_model_from_env();
    let header = read_header(&demo).unwrap();
    let header_len = header.data_offset;
    println!(
        "demo model: {} ({} header bytes, {} tensors, {} keys)",
        demo.display(),
        header_len,
        header.tensors.len(),
        header.metadata.len()
    );

    let baseline = time(|| {
        plain_read(&demo, header_len);
    });
    support::print_ratio(
        "read_header, every value (inspect)",
        time(|| drop(read_header(&demo).unwrap())),
        "plain read",
        baseline,
    );
    support::print_ratio(
        "summary read (catalog, loader)",
        time(|| drop(read_header_with(&demo, &HeaderLimits::default(), Decode::Summary).unwrap())),
        "plain read",
        baseline,
    );
    support::print_ratio(
        "MappedFile::open (one parse over an mmap)",
        time(|| drop(llama_router::gguf::MappedFile::open(&demo).unwrap())),
        "plain read",
        baseline,
    );
    support::print_ratio(
        "GgufModel::open (demo model)",
        time(|| drop(GgufModel::open(&demo).unwrap())),
        "plain read",
        baseline,
    );

    // 1,000 sparse copies: the real header bytes, the real file length, no data on disk.
    let dir = tempfile::tempdir().unwrap();
    support::sparse_copies(&demo, dir.path(), COPIES);
    let copies: Vec<PathBuf> = (0..COPIES)
        .map(|i| dir.path().join(format!("model-{i:04}.gguf")))
        .collect();
    let catalog_baseline = time_rounds(CATALOG_ROUNDS, || {
        for p in &copies {
            plain_read(p, header_len);
        }
    });
    let catalog = time_rounds(CATALOG_ROUNDS, || copies.iter().for_each(|p| summary_of(p)));
    report_catalog("warm", catalog, catalog_baseline);

    if !evict(&copies) {
        println!("cold: skipped (neither drop_caches nor posix_fadvise is allowed here)");
        return;
    }
    let cold_baseline = time_prepared(
        CATALOG_ROUNDS,
        || assert!(evict(&copies)),
        || {
            for p in &copies {
                plain_read(p, header_len);
            }
        },
    );
    let cold = time_prepared(
        CATALOG_ROUNDS,
        || assert!(evict(&copies)),
        || copies.iter().for_each(|p| summary_of(p)),
    );
    report_catalog("cold", cold, cold_baseline);
}

fn report_catalog(cache: &str, catalog: Duration, baseline: Duration) {
    support::print_ratio(
        &format!("catalog: summary reads of {COPIES} copies, {cache}"),
        catalog,
        "plain read",
        baseline,
    );
    println!(
        "  per model: {:.3} ms (plain read {:.3} ms)",
        catalog.as_secs_f64() * 1e3 / COPIES as f64,
        baseline.as_secs_f64() * 1e3 / COPIES as f64
    );
}
