//! Inference through the real daemon and its real worker processes, on the
//! demo model (Gemma 3 270M): determinism, concurrency, cancellation, crashes,
//! hangs, swapping under --models-max 1, and the errors a client sees.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};

use llama_router::proto::pb;
use support::{Daemon, add_demo_model, collect, greedy, state};
use tonic::Code;

const PROMPT: &str = "The capital of France is";

async fn generate(
    d: &Daemon,
    request: pb::GenerateRequest,
) -> Result<support::Generated, tonic::Status> {
    let stream = d.inference().await.generate(request).await?.into_inner();
    collect(stream).await
}

fn kill(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// A greedy stream on "gemma" that runs until its context is full (minutes).
async fn endless(d: &Daemon) -> tonic::Streaming<pb::GenerateResponse> {
    d.inference()
        .await
        .generate(greedy("gemma", PROMPT, 0))
        .await
        .unwrap()
        .into_inner()
}

/// Reads `stream` until it fails; panics if it ends as if complete.
async fn stream_error(stream: &mut tonic::Streaming<pb::GenerateResponse>) -> tonic::Status {
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended as if complete"),
            Err(e) => return e,
        }
    }
}

async fn worker_pid(d: &Daemon, id: &str) -> u32 {
    let pid = d.model(id).await.unwrap().worker_pid;
    assert!(pid > 0, "model {id} has no worker");
    pid
}

/// Worker sockets the daemon left in its runtime directory's `workers/`.
fn worker_sockets(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.socket.parent().unwrap().join("workers"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("worker-"))
        .collect()
}

#[tokio::test]
async fn greedy_generation_is_deterministic_across_requests_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(dir.path(), &[]).await;
    let first = generate(&d, greedy("gemma", PROMPT, 24)).await.unwrap();
    assert_eq!(first.tokens.len(), 24);
    assert_eq!(first.finish, pb::FinishReason::Length as i32);
    assert!(!first.text.trim().is_empty(), "{first:?}");
    let usage = first.usage.unwrap();
    assert_eq!(usage.completion_tokens, 24);
    let prompt_tokens = d.prompt_tokens("gemma", PROMPT).await;
    assert_eq!(usage.prompt_tokens as usize, prompt_tokens.len());
    assert!(usage.time_to_first_token_ms > 0.0 && usage.tokens_per_second > 0.0);

    let second = generate(&d, greedy("gemma", PROMPT, 24)).await.unwrap();
    assert_eq!(second.tokens, first.tokens);
    assert_eq!(second.text, first.text);
    let m = d.model("gemma").await.unwrap();
    assert_eq!(state(&m), "ready");
    assert!(m.worker_pid > 0);
    drop(d);

    let d = Daemon::start(dir.path(), &[]).await;
    let third = generate(&d, greedy("gemma", PROMPT, 24)).await.unwrap();
    assert_eq!(
        third.tokens, first.tokens,
        "a new daemon and worker give the same tokens"
    );
}

#[tokio::test]
async fn seeds_stop_strings_and_tokens_behave() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(dir.path(), &[]).await;
    let sampled = |seed| pb::GenerateRequest {
        sampling: Some(pb::SamplingParams {
            temperature: Some(1.0),
            seed: Some(seed),
            ..Default::default()
        }),
        ..greedy("gemma", PROMPT, 16)
    };
    let a = generate(&d, sampled(7)).await.unwrap();
    let b = generate(&d, sampled(7)).await.unwrap();
    assert_eq!(a.tokens, b.tokens, "same seed, same request: same tokens");

    // A stop string taken from the greedy answer cuts it there and never shows.
    let full = generate(&d, greedy("gemma", PROMPT, 24)).await.unwrap();
    let word = full
        .text
        .split_whitespace()
        .nth(2)
        .expect("the answer has three words")
        .to_owned();
    let cut = full.text.find(&word).unwrap();
    let stopped = generate(
        &d,
        pb::GenerateRequest {
            stop: vec![word.clone()],
            ..greedy("gemma", PROMPT, 24)
        },
    )
    .await
    .unwrap();
    assert_eq!(stopped.text, full.text[..cut], "stop {word:?}");
    assert_eq!(stopped.finish, pb::FinishReason::Stop as i32);

    // Detokenize gives back the text of the tokens.
    let text = d
        .inference()
        .await
        .detokenize(pb::DetokenizeRequest {
            model: "gemma".into(),
            tokens: full.tokens.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .text;
    assert_eq!(text.trim(), full.text.trim());
    let err = d
        .inference()
        .await
        .detokenize(pb::DetokenizeRequest {
            model: "gemma".into(),
            tokens: vec![-1, 999_999_999],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

#[tokio::test]
async fn eight_concurrent_streams_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(dir.path(), &["--parallel", "4"]).await;
    let prompts = [
        "The capital of France is",
        "One, two, three,",
        "Water boils at",
        "The largest planet is",
        "Once upon a time",
        "The opposite of hot is",
        "Monday, Tuesday,",
        "In 1969 the first",
    ];
    let mut tasks = Vec::new();
    for prompt in prompts {
        let mut client = d.inference().await;
        tasks.push(tokio::spawn(async move {
            let stream = client
                .generate(greedy("gemma", prompt, 20))
                .await?
                .into_inner();
            collect(stream).await
        }));
    }
    for task in tasks {
        let out = task.await.unwrap().unwrap();
        assert_eq!(out.tokens.len(), 20, "{out:?}");
        assert_eq!(out.finish, pb::FinishReason::Length as i32);
    }
    // The engine is still serving once the batch has drained.
    let alone = generate(&d, greedy("gemma", prompts[0], 20)).await.unwrap();
    assert_eq!(alone.tokens.len(), 20);
}

#[tokio::test]
async fn a_cancelled_stream_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(dir.path(), &["--parallel", "1", "--request-queue", "0"]).await;
    let mut long = endless(&d).await;
    long.message().await.unwrap().unwrap();
    long.message().await.unwrap().unwrap();
    let busy = d
        .inference()
        .await
        .generate(greedy("gemma", PROMPT, 4))
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Code::ResourceExhausted, "{busy:?}");

    drop(long);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match generate(&d, greedy("gemma", PROMPT, 4)).await {
            Ok(out) => {
                assert_eq!(out.tokens.len(), 4);
                break;
            }
            Err(e) if e.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the cancelled request still holds the slot: {e:?}"),
        }
    }
}

async fn crash_and_recover(sig: &str) {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(dir.path(), &[]).await;
    let mut stream = endless(&d).await;
    stream.message().await.unwrap().unwrap();
    let pid = worker_pid(&d, "gemma").await;
    kill(pid, sig);

    // The request in flight ends with UNAVAILABLE and the reason.
    let err = stream_error(&mut stream).await;
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(sig), "{err:?}");
    d.wait_for("the model to fail", |ms| {
        ms.iter().any(|m| m.id == "gemma" && state(m) == "failed")
    })
    .await;
    let m = d.model("gemma").await.unwrap();
    assert!(
        m.failure_reason
            .contains(&format!("worker killed by {sig}")),
        "{m:?}"
    );
    assert_eq!(m.worker_pid, 0);
    assert!(!alive(pid));
    assert!(worker_sockets(&d).is_empty(), "{:?}", worker_sockets(&d));

    // The daemon is fine and the next request restarts the worker.
    let out = generate(&d, greedy("gemma", PROMPT, 8)).await.unwrap();
    assert_eq!(out.tokens.len(), 8);
    let new_pid = worker_pid(&d, "gemma").await;
    assert_ne!(new_pid, pid);
    // The one ERROR event follows the report's symbolization.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !d.log_text().contains("worker for gemma failed") {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_worker_killed_by_sigsegv_fails_the_model_and_the_next_request_restarts_it() {
    crash_and_recover("SIGSEGV").await;
}

#[tokio::test]
async fn a_worker_killed_by_sigkill_fails_the_model_and_the_next_request_restarts_it() {
    crash_and_recover("SIGKILL").await;
}

#[tokio::test]
async fn a_hung_worker_is_killed_and_the_model_fails() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    // Short enough to notice within the test, long enough for a busy CI box.
    // A stopped process answers no ping: the (generous) step limit plays no part.
    let d = Daemon::start(
        dir.path(),
        &["--worker-ping-timeout", "3", "--worker-step-timeout", "30"],
    )
    .await;
    generate(&d, greedy("gemma", PROMPT, 2)).await.unwrap();
    let pid = worker_pid(&d, "gemma").await;
    kill(pid, "STOP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while d
        .model("gemma")
        .await
        .is_some_and(|m| state(&m) != "failed")
    {
        assert!(Instant::now() < deadline, "the hung worker was not noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = d.model("gemma").await.unwrap();
    assert!(m.failure_reason.contains("hung"), "{m:?}");
    assert!(!alive(pid), "the hung worker must be killed");
    let out = generate(&d, greedy("gemma", PROMPT, 4)).await.unwrap();
    assert_eq!(out.tokens.len(), 4);
}

#[tokio::test]
async fn two_models_alternating_under_models_max_1_complete_every_request() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "a");
    add_demo_model(dir.path(), "b");
    let d = Daemon::start(dir.path(), &["--models-max", "1"]).await;
    for id in ["a", "b", "a", "b"] {
        let out = generate(&d, greedy(id, PROMPT, 6)).await.unwrap();
        assert_eq!(out.tokens.len(), 6, "{id}");
    }
    // Concurrent requests for both: each model waits for the other's to end.
    let mut tasks = Vec::new();
    for id in ["a", "b", "a", "b", "a", "b"] {
        let mut client = d.inference().await;
        tasks.push(tokio::spawn(async move {
            let stream = client.generate(greedy(id, PROMPT, 6)).await?.into_inner();
            collect(stream).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().tokens.len(), 6);
    }
    let models = d.models().await;
    let running = models.iter().filter(|m| state(m) == "ready").count();
    assert!(running <= 1, "{models:?}");
}

#[tokio::test]
async fn clients_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(dir.path(), &[]).await;
    let mut c = d.inference().await;

    let err = c.generate(greedy("nope", PROMPT, 4)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = c.generate(greedy("", PROMPT, 4)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let bad = pb::GenerateRequest {
        sampling: Some(pb::SamplingParams {
            top_p: Some(7.0),
            ..Default::default()
        }),
        ..greedy("gemma", PROMPT, 4)
    };
    let err = c.generate(bad).await.unwrap_err();
    assert!(
        err.code() == Code::InvalidArgument && err.message().contains("top_p"),
        "{err:?}"
    );

    // The demo model has no chat template: Chat falls back to ChatML, as llama-server does.
    let chat = c
        .chat(pb::ChatRequest {
            model: "gemma".into(),
            messages: vec![pb::ChatMessage {
                role: "user".into(),
                content: "hi".into(),
                ..Default::default()
            }],
            max_tokens: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let chat = collect(chat).await.unwrap();
    assert!(
        chat.finish == pb::FinishReason::Stop as i32
            || chat.finish == pb::FinishReason::Length as i32,
        "{chat:?}"
    );
    assert!(
        chat.usage.unwrap().prompt_tokens > 3,
        "ChatML wraps the message"
    );
    // ApplyTemplate: the prompt Chat generated from, and the same token count.
    let rendered = c
        .apply_template(pb::ApplyTemplateRequest {
            model: "gemma".into(),
            messages: vec![pb::ChatMessage {
                role: "user".into(),
                content: "hi".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rendered.prompt,
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(rendered.prompt_tokens, chat.usage.unwrap().prompt_tokens);

    // A grammar constrains the answer; one that does not parse is refused.
    let constrained = |grammar: &str| pb::GenerateRequest {
        sampling: Some(pb::SamplingParams {
            temperature: Some(0.0),
            grammar: Some(grammar.into()),
            ..Default::default()
        }),
        ..greedy("gemma", PROMPT, 8)
    };
    let answer = generate(&d, constrained("root ::= \" Paris\" | \" Lyon\""))
        .await
        .unwrap();
    assert!(
        answer.text == " Paris" || answer.text == " Lyon",
        "{answer:?}"
    );
    assert_eq!(answer.finish, pb::FinishReason::Stop as i32);
    let err = c.generate(constrained("root ::= (")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Embeddings: one unit vector per input, the model's width, similar texts closer.
    let reply = c
        .embed(pb::EmbedRequest {
            model: "gemma".into(),
            input: vec!["a cat".into(), "a kitten".into(), "tax law of 1997".into()],
            normalize: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.embeddings.len(), 3);
    let v: Vec<&Vec<f32>> = reply.embeddings.iter().map(|e| &e.values).collect();
    assert_eq!(v[0].len(), 640);
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!((dot(v[0], v[0]) - 1.0).abs() < 1e-3);
    assert!(
        dot(v[0], v[1]) > dot(v[0], v[2]),
        "cat~kitten closer than cat~tax law"
    );
}

#[tokio::test]
async fn without_autoload_requests_need_a_loaded_model() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(dir.path(), &["--no-models-autoload"]).await;
    let err = generate(&d, greedy("gemma", PROMPT, 4)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let out = d.cli(&["load", "gemma"]);
    assert!(out.status.success(), "{out:?}");
    let out = d.cli(&[
        "generate",
        "gemma",
        PROMPT,
        "--temperature",
        "0",
        "--max-tokens",
        "8",
    ]);
    assert!(out.status.success(), "{out:?}");
    let first = generate(&d, greedy("gemma", PROMPT, 8)).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        first.text.trim_end()
    );
}

#[tokio::test]
async fn workers_get_an_explicit_environment_and_die_with_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let notify = tempfile::tempdir().unwrap();
    let notify_socket = notify.path().join("notify.sock");
    let _listener = std::os::unix::net::UnixDatagram::bind(&notify_socket).unwrap();
    let mut d = Daemon::start_with_env(
        dir.path(),
        &[],
        &[
            ("NOTIFY_SOCKET", notify_socket.as_path()),
            ("LLAMA_ROUTER_LOG_FORMAT", std::path::Path::new("text")),
        ],
    )
    .await;
    generate(&d, greedy("gemma", PROMPT, 2)).await.unwrap();
    let pid = worker_pid(&d, "gemma").await;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let names: Vec<String> = environ
        .split(|b| *b == 0)
        .filter_map(|kv| kv.split(|b| *b == b'=').next())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .filter(|k| !k.is_empty())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n == "NOTIFY_SOCKET" || n.starts_with("LLAMA_ROUTER_")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "PATH"), "{names:?}");
    let parent = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(
        parent.contains(&format!(" {} ", d.child.id())),
        "the daemon is its parent: {parent}"
    );

    // The daemon dies without a chance to clean up: the worker goes with it.
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid), "worker {pid} outlived the daemon");
}

#[tokio::test]
async fn unloading_a_busy_model_stops_its_worker_within_the_stop_timeout() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(dir.path(), &["--stop-timeout", "1"]).await;
    let mut stream = endless(&d).await;
    stream.message().await.unwrap().unwrap();
    let pid = worker_pid(&d, "gemma").await;
    let unloaded = d
        .client()
        .await
        .unload_model(pb::UnloadModelRequest { id: "gemma".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&unloaded), "unloaded");
    assert_eq!(unloaded.worker_pid, 0);
    assert!(!alive(pid), "the worker must be gone once unload returns");
    let err = stream_error(&mut stream).await;
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("unloaded"), "{err:?}");
    assert!(worker_sockets(&d).is_empty());
}

#[tokio::test]
async fn a_long_prompt_is_fed_in_chunks_without_stalling_a_running_stream() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(dir.path(), &["--parallel", "2", "--batch-size", "128"]).await;
    let mut running = endless(&d).await;
    running.message().await.unwrap().unwrap();
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Ok(Some(_)) = running.message().await {
            let _ = arrived.send(Instant::now());
        }
    });
    // About 2,000 tokens: some sixteen chunks of 128 while the other stream decodes
    // (fed in one step, the other stream would get one or two tokens meanwhile).
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(200);
    let sent = Instant::now();
    let mut long = d
        .inference()
        .await
        .generate(greedy("gemma", &long_prompt, 1))
        .await
        .unwrap()
        .into_inner();
    long.message().await.unwrap().unwrap();
    let answered = Instant::now();
    reader.abort();
    let mut during = 0;
    while let Ok(t) = arrivals.try_recv() {
        during += usize::from(t > sent && t < answered);
    }
    assert!(
        during >= 6,
        "the running stream got {during} tokens while the long prompt was processed"
    );
}
