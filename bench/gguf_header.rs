//! GGUF header benchmarks, each printed as a ratio to a plain `read` of the
//! same header bytes measured in the same run (page cache warm for both).
//!
//! 1. The demo model: `read_header` (header-only read + parse + validation)
//!    and `GgufModel::open` vs reading its header bytes into a buffer.
//! 2. Catalog-style: header-only reads of 1,000 copies of the demo model
//!    (sparse files with the real header and the real length) vs reading
//!    each copy's header bytes.
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

use llama_router::gguf::{GgufModel, read_header};

/// Timed rounds per measurement (median reported); the catalog scan uses fewer.
const ROUNDS: usize = 15;
const CATALOG_ROUNDS: usize = 3;
const COPIES: usize = 1000;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Median over `rounds` of running `f` once, after one warm-up run.
fn time_rounds(rounds: usize, mut f: impl FnMut()) -> Duration {
    f();
    median(
        (0..rounds)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
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
        "read_header (demo model)",
        time(|| drop(read_header(&demo).unwrap())),
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
    let catalog = time_rounds(CATALOG_ROUNDS, || {
        for p in &copies {
            drop(read_header(p).unwrap());
        }
    });
    support::print_ratio(
        &format!("header-only reads of {COPIES} copies"),
        catalog,
        "plain read",
        catalog_baseline,
    );
    println!(
        "per model: {:.3} ms (plain read {:.3} ms)",
        catalog.as_secs_f64() * 1e3 / COPIES as f64,
        catalog_baseline.as_secs_f64() * 1e3 / COPIES as f64
    );
}
