//! A worker under big work and hostile requests, through the real daemon and
//! its real worker on the demo model: a big embedding batch next to a
//! running stream must not get the worker killed as hung, and every count a
//! request names is bounded with a clear refusal.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};

use llama_router::proto::pb;
use support::{Daemon, add_demo_model, free_port, greedy, state};
use tonic::Code;

const PROMPT: &str = "The capital of France is";

async fn worker_pid(d: &Daemon, id: &str) -> u32 {
    d.model(id).await.unwrap().worker_pid
}

fn embed_request(inputs: Vec<String>) -> pb::EmbedRequest {
    pb::EmbedRequest {
        model: "gemma".into(),
        input: inputs,
        normalize: true,
    }
}

fn sentences(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("Sentence {i} is about the weather in a small town by the sea."))
        .collect()
}

/// POSTs `body` as JSON over plain HTTP/1.1; returns the status code and body.
fn http_post(port: u16, path: &str, body: &str) -> (u16, String) {
    support::http(port, "POST", path, body, Duration::from_secs(60)).unwrap()
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    support::proc_kib(pid, "VmHWM:")
}

#[tokio::test]
async fn a_big_embedding_batch_next_to_a_stream_keeps_the_worker_alive() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    // The old engine ran a whole batch in one go, holding the decode thread
    // (and the ping queued behind it) for all of it: 100 one-word inputs took
    // 13.6 s on a busy 2-core box, against a 3 s ping limit here. The step
    // limit is generous: on a loaded box one step may take seconds, and this
    // test is about the ping. One llama.cpp thread: steps stay short when
    // other processes load the cores.
    let d = Daemon::start(
        dir.path(),
        &[
            "--worker-ping-timeout",
            "3",
            "--worker-step-timeout",
            "30",
            "--ctx-size",
            "256",
            "--threads",
            "1",
        ],
    )
    .await;
    let mut c = d.inference().await;
    support::collect(
        c.generate(greedy("gemma", PROMPT, 2))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    let pid = worker_pid(&d, "gemma").await;
    assert!(pid > 0);

    // Greedy until the context is full: some 250 tokens.
    let mut stream = c
        .generate(greedy("gemma", PROMPT, 0))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    let reader = tokio::spawn(async move {
        let mut arrivals = Vec::new();
        let mut finish = (0, String::new());
        loop {
            match stream.message().await {
                Ok(Some(piece)) => {
                    arrivals.push(Instant::now());
                    if piece.finish_reason != 0 {
                        finish = (piece.finish_reason, piece.error);
                    }
                }
                Ok(None) => return Ok((arrivals, finish)),
                Err(status) => return Err(status),
            }
        }
    });

    let n = 200;
    let words = (0..n).map(|i| format!("word{i}")).collect();
    let sent = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(240), c.embed(embed_request(words)))
        .await
        .expect("the embedding batch did not finish within 240 s")
        .expect("the embedding batch failed");
    let answered = Instant::now();
    eprintln!("{n} embeddings took {:?}", answered - sent);
    let reply = reply.into_inner();
    assert_eq!(reply.embeddings.len(), n);
    assert!(reply.embeddings.iter().all(|e| !e.values.is_empty()));

    let (arrivals, (finish, error)) = tokio::time::timeout(Duration::from_secs(240), reader)
        .await
        .expect("the stream did not end within 240 s")
        .unwrap()
        .expect("the stream next to the batch failed");
    assert_eq!(finish, pb::FinishReason::Length as i32, "{error}");
    let during = arrivals
        .iter()
        .filter(|&&t| t > sent && t < answered)
        .count();
    let all = arrivals.len();
    eprintln!("the stream got {during} of its {all} tokens while the batch ran");
    assert!(
        during >= 10 || arrivals.last().is_some_and(|&t| t < answered),
        "the stream got only {during} tokens while the batch ran and was still going"
    );
    let m = d.model("gemma").await.unwrap();
    assert_eq!(m.worker_pid, pid, "the worker was restarted: {m:?}");
    assert_eq!(state(&m), "ready", "{m:?}");
    assert!(m.failure_reason.is_empty(), "{m:?}");
}

#[tokio::test]
async fn embedding_batches_past_the_input_limit_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let port = free_port();
    let d = Daemon::start(dir.path(), &["--http-port", &port.to_string()]).await;
    // OpenAI's own limit is 2,048 inputs: that is the default.
    let tiny = vec!["a".to_owned(); 2049];
    let err = d
        .inference()
        .await
        .embed(embed_request(tiny.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("at most 2048") && err.message().contains("embed_max_inputs"),
        "{err:?}"
    );
    let body = serde_json::json!({"model": "gemma", "input": tiny}).to_string();
    let (code, body) =
        tokio::task::spawn_blocking(move || http_post(port, "/v1/embeddings", &body))
            .await
            .unwrap();
    assert_eq!(code, 400, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains("embed_max_inputs"), "{body}");
    // Refused before the model was leased: no worker was started for it.
    assert_eq!(worker_pid(&d, "gemma").await, 0);
    let ok = d
        .inference()
        .await
        .embed(embed_request(sentences(3)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.embeddings.len(), 3);
}

#[tokio::test]
async fn configured_input_limits_are_named_in_the_refusal() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(
        dir.path(),
        &["--embed-max-inputs", "4", "--batch-size", "64"],
    )
    .await;
    let mut c = d.inference().await;
    let err = c.embed(embed_request(sentences(5))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("at most 4 (config key embed_max_inputs)"),
        "{err:?}"
    );
    assert_eq!(
        c.embed(embed_request(sentences(4)))
            .await
            .unwrap()
            .into_inner()
            .embeddings
            .len(),
        4
    );
    // One input is one decode step: at most batch_size tokens, like every step.
    let long = vec![sentences(20).join(" ")];
    let err = c.embed(embed_request(long)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("at most 64 tokens") && err.message().contains("batch_size"),
        "{err:?}"
    );
}

#[tokio::test]
async fn stop_strings_are_bounded_in_count_and_length() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(dir.path(), &[]).await;
    let mut c = d.inference().await;
    let with_stops = |stop: Vec<String>| pb::GenerateRequest {
        stop,
        ..greedy("gemma", PROMPT, 4)
    };
    let many: Vec<String> = (0..17).map(|i| format!("stop{i}")).collect();
    let err = c.generate(with_stops(many)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("at most 16"), "{err:?}");
    let err = c
        .generate(with_stops(vec!["x".repeat(100_000)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("at most 256 bytes"), "{err:?}");
    let chat = pb::ChatRequest {
        model: "gemma".into(),
        messages: vec![pb::ChatMessage {
            role: "user".into(),
            content: "hi".into(),
            ..Default::default()
        }],
        max_tokens: 4,
        sampling: None,
        stop: vec!["y".repeat(257)],
        ..Default::default()
    };
    let err = c.chat(chat).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let fine: Vec<String> = (0..16).map(|i| format!("stop{i}")).collect();
    let out = support::collect(c.generate(with_stops(fine)).await.unwrap().into_inner())
        .await
        .unwrap();
    assert!(!out.tokens.is_empty());
}

#[tokio::test]
async fn a_huge_penalty_window_is_clamped_to_the_context() {
    let dir = tempfile::tempdir().unwrap();
    add_demo_model(dir.path(), "gemma");
    let d = Daemon::start(dir.path(), &[]).await;
    let mut c = d.inference().await;
    support::collect(
        c.generate(greedy("gemma", PROMPT, 2))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    let pid = worker_pid(&d, "gemma").await;
    let before = peak_rss_kib(pid);
    // llama.cpp allocates the penalty window up front: 2^28 tokens would be 1 GiB.
    let request = pb::GenerateRequest {
        sampling: Some(pb::SamplingParams {
            temperature: Some(0.0),
            repeat_penalty: Some(1.1),
            penalty_last_n: Some(1 << 28),
            ..Default::default()
        }),
        ..greedy("gemma", PROMPT, 4)
    };
    let out = support::collect(c.generate(request).await.unwrap().into_inner())
        .await
        .unwrap();
    assert_eq!(out.tokens.len(), 4);
    let after = peak_rss_kib(pid);
    eprintln!("worker peak RSS {before} KiB before, {after} KiB after");
    assert!(
        after < before + 256 * 1024,
        "the worker's peak RSS grew from {before} to {after} KiB for one request"
    );
}
