//! GPU offload for real, on Mesa's lavapipe: a conformant Vulkan device that
//! runs on the CPU. Discovery through ggml's registry, a fully offloaded
//! model answering as on the CPU, the ledger filling and emptying (unload and
//! crash), VRAM-pressure eviction under a memory budget, and the dry run.
//!
//! A build with the `vulkan` feature runs them and needs lavapipe
//! (`mesa-vulkan-drivers`); other builds skip them, saying so. Only these
//! daemons see the device: ggml ignores a CPU-type Vulkan device unless
//! `GGML_VK_VISIBLE_DEVICES` names it. The first load compiles Mesa's shader
//! pipelines (about 30 to 90 s on 2 cores); the cache under the target
//! directory makes later loads in the run take seconds. Generations are short:
//! lavapipe decodes at a few tokens per second.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::{Path, PathBuf};

use llama_router::proto::pb;
use support::{Daemon, add_demo_model, collect, greedy};

const LAVAPIPE_ICD: &str = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json";
const PROMPT: &str = "The capital of France is";
/// Tokens compared between the CPU and the Vulkan answer.
const TOKENS: u32 = 6;

/// The environment that shows lavapipe to one daemon, or None (skip) on a
/// build without Vulkan.
fn lavapipe_env() -> Option<Vec<(&'static str, PathBuf)>> {
    if !cfg!(feature = "vulkan") {
        eprintln!("skipped: this build has no vulkan feature");
        return None;
    }
    assert!(
        Path::new(LAVAPIPE_ICD).is_file(),
        "a vulkan build's tests run on lavapipe: install mesa-vulkan-drivers ({LAVAPIPE_ICD})"
    );
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mesa-shader-cache");
    std::fs::create_dir_all(&cache).unwrap();
    Some(vec![
        ("GGML_VK_VISIBLE_DEVICES", PathBuf::from("0")),
        ("VK_ICD_FILENAMES", PathBuf::from(LAVAPIPE_ICD)),
        ("MESA_SHADER_CACHE_DIR", cache),
    ])
}

/// One lavapipe test at a time: the first compiles Mesa's shader pipelines
/// (a minute or more on 2 cores), the others then find them in the cache
/// instead of compiling the same ones side by side.
static LAVAPIPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start(dir: &Path, args: &[&str], env: &[(&'static str, PathBuf)]) -> Daemon {
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    // A cold shader cache makes the first worker start slow, and lavapipe
    // compiles a kernel the first time a batch shape needs it: the first
    // prompt's step once ran past 30 s on a loaded 2-core machine.
    let mut all = vec![
        "--ctx-size",
        "256",
        "--parallel",
        "1",
        "--worker-start-timeout",
        "900",
        "--worker-step-timeout",
        "300",
    ];
    all.extend_from_slice(args);
    Daemon::start_with_env(dir, &all, &env).await
}

async fn answer(d: &Daemon, model: &str, tokens: u32) -> support::Generated {
    let stream = d
        .inference()
        .await
        .generate(greedy(model, PROMPT, tokens))
        .await
        .unwrap_or_else(|e| panic!("{model}: {e}\nlog:\n{}", d.log_text()))
        .into_inner();
    collect(stream).await.unwrap()
}

fn vulkan_device(status: &pb::StatusResponse) -> &pb::GpuDevice {
    status
        .gpus
        .iter()
        .find(|g| g.backend == "vulkan")
        .unwrap_or_else(|| panic!("no vulkan device: {status:#?}"))
}

fn dry_run(d: &Daemon, model: &str) -> serde_json::Value {
    let out = d.cli(&["load", model, "--dry-run", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
#[cfg_attr(not(feature = "vulkan"), ignore = "needs the vulkan feature")]
async fn a_fully_offloaded_model_answers_as_on_the_cpu_and_the_ledger_fills_and_empties() {
    let Some(env) = lavapipe_env() else { return };
    let _one = LAVAPIPE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");

    let cpu = Daemon::start(dir.path(), &["--ctx-size", "256", "--parallel", "1"]).await;
    let on_cpu = answer(&cpu, "gemma", TOKENS).await;
    drop(cpu);

    let d = start(dir.path(), &["--gpu-layers", "all"], &env).await;
    // Discovery through ggml: the device llama.cpp will use, and the host.
    let status = d.status().await;
    let gpu = vulkan_device(&status);
    assert!(gpu.usable, "{gpu:?}");
    assert_eq!((gpu.ggml_name.as_str(), gpu.index), ("Vulkan0", 0));
    assert!(gpu.name.contains("llvmpipe"), "{gpu:?}");
    assert!(gpu.total_bytes > 0 && gpu.reserved_by_model.is_empty());
    assert!(
        status.gpus.iter().any(|g| g.backend == "cpu" && !g.usable),
        "{:?}",
        status.gpus
    );

    let on_gpu = answer(&d, "gemma", TOKENS).await;
    assert_eq!(
        on_gpu.tokens, on_cpu.tokens,
        "greedy text on the device ({:?}) differs from the CPU's ({:?})",
        on_gpu.text, on_cpu.text
    );
    // llama.cpp's own report: every layer offloaded, its buffers on Vulkan0.
    let model = d.model("gemma").await.unwrap();
    let used = model
        .gpu
        .clone()
        .unwrap_or_else(|| panic!("no gpu use: {model:#?}"));
    assert_eq!(used.layers, used.max_layers, "{used:?}");
    assert_eq!(used.max_layers, 19, "{used:?}");
    assert!(used.device.starts_with("vulkan:0"), "{used:?}");
    assert!(
        used.measured_bytes > 0 && used.estimate_bytes > 0,
        "{used:?}"
    );
    assert_eq!(
        used.reserved_bytes, used.measured_bytes,
        "the ledger holds what was measured"
    );
    let status = d.status().await;
    let gpu = vulkan_device(&status);
    assert_eq!(
        gpu.reserved_by_model.get("gemma"),
        Some(&used.measured_bytes)
    );
    assert_eq!(gpu.free_bytes, gpu.total_bytes - used.measured_bytes);
    let listed = d.cli_json(&["models", "--json"]);
    assert_eq!(listed[0]["gpu"]["measured_bytes"], used.measured_bytes);
    eprintln!(
        "offload: {}/{} layers, measured {} bytes, estimated {}, upload {:.2} s",
        used.layers, used.max_layers, used.measured_bytes, used.estimate_bytes, used.upload_seconds
    );

    // A crash gives the memory back.
    let pid = i32::try_from(model.worker_pid).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.wait_for("the crash", |m| m[0].gpu.is_none() && m[0].worker_pid == 0)
        .await;
    assert!(
        vulkan_device(&d.status().await)
            .reserved_by_model
            .is_empty()
    );

    // So does an unload, after the next request brought the worker back.
    answer(&d, "gemma", 1).await;
    assert!(
        vulkan_device(&d.status().await)
            .reserved_by_model
            .contains_key("gemma")
    );
    d.cli(&["unload", "gemma"]);
    let status = d.status().await;
    let gpu = vulkan_device(&status);
    assert!(gpu.reserved_by_model.is_empty(), "{gpu:?}");
    assert_eq!(gpu.free_bytes, gpu.total_bytes);

    // A load that starts the worker streams its start, and ends with what
    // went to the GPU and how fast, before any request.
    let mut stream = d
        .client()
        .await
        .load_model(pb::LoadModelRequest {
            id: "gemma".into(),
            dry_run: false,
            start_worker: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut phases = Vec::new();
    let mut last = None;
    while let Some(p) = stream.message().await.unwrap() {
        phases.push(p.phase);
        last = p.model.or(last);
    }
    let starting = pb::load_progress::Phase::StartingWorker as i32;
    assert!(phases.contains(&starting), "{phases:?}");
    let model = last.unwrap();
    assert!(model.worker_pid > 0, "{model:#?}");
    let used = model.gpu.unwrap();
    assert_eq!(used.layers, 19);
    assert!(
        used.upload_seconds > 0.0 && used.upload_bytes_per_second > 0,
        "{used:?}"
    );
    // The CLI says it in one line.
    d.cli(&["unload", "gemma"]);
    let out = d.cli(&["load", "gemma", "--start-worker"]);
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("19/19 layers on vulkan:0") && line.contains("uploaded in"),
        "{line}"
    );
}

#[tokio::test]
#[cfg_attr(not(feature = "vulkan"), ignore = "needs the vulkan feature")]
async fn under_a_budget_the_idle_model_is_evicted_and_the_dry_run_says_so_first() {
    let Some(env) = lavapipe_env() else { return };
    let _one = LAVAPIPE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "a");
    add_demo_model(dir.path(), "b");

    // What one model needs before it ever ran: the estimate.
    let probe = start(dir.path(), &["--gpu-layers", "all"], &env).await;
    let need = dry_run(&probe, "a")["need_bytes"].as_u64().unwrap();
    drop(probe);

    // Room for both estimates: both run offloaded, nobody is evicted.
    let roomy = (2 * need + (64 << 20)).to_string();
    let d = start(
        dir.path(),
        &["--gpu-layers", "all", "--gpu-memory-budget", &roomy],
        &env,
    )
    .await;
    assert_eq!(
        vulkan_device(&d.status().await).budget_bytes.to_string(),
        roomy
    );
    answer(&d, "a", 1).await;
    answer(&d, "b", 1).await;
    let models = d.models().await;
    assert!(models.iter().all(|m| m.gpu.is_some()), "{models:#?}");
    drop(d);

    // Room for one estimate only: b's offload needs a's memory.
    let tight = (need + need / 20).to_string();
    let d = start(
        dir.path(),
        &["--gpu-layers", "all", "--gpu-memory-budget", &tight],
        &env,
    )
    .await;
    answer(&d, "a", 1).await;
    let plan = dry_run(&d, "b");
    assert_eq!(plan["gpu_evicts"], serde_json::json!(["a"]), "{plan}");
    assert_eq!(plan["layers"], 19, "{plan}");
    assert!(plan["refused"].is_null(), "{plan}");
    assert!(
        d.model("a").await.unwrap().gpu.is_some(),
        "a dry run evicts nothing"
    );

    // Pinned, a stays: b is refused with the numbers, and the plan said so.
    d.cli(&["pin", "a"]);
    let plan = dry_run(&d, "b");
    assert!(
        plan["refused"].as_str().unwrap().contains("needs"),
        "{plan}"
    );
    let refused = d.inference().await.generate(greedy("b", PROMPT, 1)).await;
    let refused = match refused {
        Err(status) => status,
        Ok(stream) => collect(stream.into_inner()).await.unwrap_err(),
    };
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains("GPU memory"), "{refused:?}");
    assert!(d.model("a").await.unwrap().gpu.is_some());

    // Unpinned and idle, a is evicted for b.
    d.cli(&["pin", "a", "--off"]);
    answer(&d, "b", 1).await;
    let a = d.model("a").await.unwrap();
    let b = d.model("b").await.unwrap();
    assert!(a.gpu.is_none() && a.worker_pid == 0, "{a:#?}");
    assert!(b.gpu.as_ref().is_some_and(|g| g.layers == 19), "{b:#?}");
    assert!(
        d.log_text().contains("to make GPU memory for b"),
        "the eviction names its cause"
    );
}

#[tokio::test]
#[cfg_attr(not(feature = "vulkan"), ignore = "needs the vulkan feature")]
async fn offload_asked_for_with_no_device_is_said_at_start_and_on_the_model() {
    if !cfg!(feature = "vulkan") {
        eprintln!("skipped: this build has no vulkan feature");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    // No GGML_VK_VISIBLE_DEVICES: ggml does not use lavapipe, so there is no GPU.
    let d = Daemon::start_with_env(
        dir.path(),
        &[
            "--gpu-layers",
            "all",
            "--ctx-size",
            "256",
            "--parallel",
            "1",
        ],
        &[("VK_ICD_FILENAMES", Path::new(LAVAPIPE_ICD))],
    )
    .await;
    let log = d.log_text();
    assert!(
        log.contains("asks for GPU offload, but there is no usable GPU"),
        "{log}"
    );
    assert!(log.contains("GGML_VK_VISIBLE_DEVICES"), "the hint: {log}");
    assert_eq!(
        answer(&d, "gemma", 2).await.tokens.len(),
        2,
        "it answers on the CPU"
    );
    let model = d.model("gemma").await.unwrap();
    assert!(model.gpu.is_none());
    assert!(model.note.contains("no usable GPU"), "{model:#?}");
    let listed = d.cli(&["models", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(
        listed[0]["note"]
            .as_str()
            .unwrap()
            .contains("running on the CPU")
    );
}
