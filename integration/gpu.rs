//! GPU discovery and the VRAM estimate, as a machine without a usable GPU
//! (CI) sees them: the daemon starts, serves on the CPU and says why.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::process::Command;

use llama_router::gguf::GgufModel;
use llama_router::gpu::estimate::{self, Context, Shape};
use llama_router::params::CacheType;
use support::{Daemon, add_demo_model, collect, greedy};

#[tokio::test]
async fn without_a_usable_gpu_the_daemon_says_why_and_serves_on_the_cpu() {
    let probe = Command::new(env!("CARGO_BIN_EXE_llama-router"))
        .arg("gpu-probe")
        .output()
        .unwrap();
    assert!(probe.status.success());
    let found: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();

    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(dir.path(), &["--gpu-layers", "all"]).await;
    let status = d.status().await;
    let usable: Vec<_> = status.gpus.iter().filter(|g| g.usable).collect();
    if usable.is_empty() {
        // Every source that found nothing says why (rocm, cuda, sysfs).
        let sources: Vec<&str> = status
            .gpu_notes
            .iter()
            .filter_map(|n| n.split(':').next())
            .collect();
        for source in ["rocm", "cuda"] {
            assert!(sources.contains(&source), "{:?}", status.gpu_notes);
        }
        assert_eq!(
            found["notes"].as_array().unwrap().len(),
            status.gpu_notes.len()
        );
        // --gpu-layers all on a machine without a usable GPU still answers, on the CPU.
        let stream = d
            .inference()
            .await
            .generate(greedy("gemma", "The capital of France is", 4))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(collect(stream).await.unwrap().tokens.len(), 4);
    }
}

#[test]
fn the_estimate_of_the_demo_model_adds_up() {
    let model = GgufModel::open(&support::demo_model()).unwrap();
    let shape = Shape::of(&model).unwrap();
    assert_eq!(shape.block_count, 18);
    assert_eq!(shape.n_vocab, 262_144);
    let tensors: u64 = model.tensors().map(|(_, t)| t.size).sum();
    let layers: u64 = shape.layer_bytes.iter().sum();
    // Gemma 3 ties its output to the embedding: output_norm + token_embd.
    assert!(shape.output_bytes > 0 && layers + shape.output_bytes <= tensors + shape.output_bytes);
    let context = Context {
        tokens: 4096 * 4,
        batch: 512,
        cache_k: CacheType::F16,
        cache_v: CacheType::F16,
    };
    let all = estimate::estimate(&shape, context, u32::MAX);
    assert_eq!(all.layers, 19);
    assert!(all.weights_bytes <= tensors, "{all:?}");
    // 18 layers × 16,384 tokens × (1 KV head × 256 × 2) × 2 bytes.
    assert_eq!(all.kv_bytes, 18 * 16_384 * 512 * 2);
    // Room for everything but half the weights: some layers stay on the CPU.
    let room = all.total() - all.weights_bytes / 2;
    let part = estimate::fit(&shape, context, room);
    assert!(
        part.layers > 0 && part.layers < 19 && part.total() <= room,
        "{part:?}"
    );
}
