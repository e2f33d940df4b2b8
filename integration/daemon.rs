//! `llama-router serve` driven over gRPC as a client would: catalog, hot
//! reload, the supervisor's rules, health, reflection, signals.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use llama_router::proto::pb::{self, load_progress::Phase};
use support::{Daemon, sparse_model, state, tiny_model, write_split_set};
use tokio_stream::StreamExt;
use tonic::Code;

async fn load(d: &Daemon, id: &str) -> Result<pb::Model, tonic::Status> {
    load_via(d.socket.display().to_string(), id.to_owned()).await
}

/// Loads `id` through a connection of its own and returns the final model.
async fn load_via(socket: String, id: String) -> Result<pb::Model, tonic::Status> {
    let stream = llama_router::cli::client::connect(&socket)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?
        .load_model(pb::LoadModelRequest {
            id,
            dry_run: false,
            start_worker: false,
        })
        .await?
        .into_inner();
    finish(stream).await
}

/// Starts loading `id` and returns the progress stream.
async fn start_load(d: &Daemon, id: &str) -> tonic::Streaming<pb::LoadProgress> {
    d.client()
        .await
        .load_model(pb::LoadModelRequest {
            id: id.into(),
            dry_run: false,
            start_worker: false,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Reads a load's progress to the end and returns the model it ended with.
async fn finish(
    mut stream: tonic::Streaming<pb::LoadProgress>,
) -> Result<pb::Model, tonic::Status> {
    while let Some(p) = stream.next().await {
        if let Some(m) = p?.model {
            return Ok(m);
        }
    }
    Err(tonic::Status::unknown("stream ended without a model"))
}

#[tokio::test]
async fn lists_files_split_sets_folders_and_failed_files() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("single.gguf"), "Single");
    write_split_set(dir.path(), "sharded", 3);
    std::fs::create_dir(dir.path().join("in-folder")).unwrap();
    tiny_model(&dir.path().join("in-folder/weights.gguf"), "Folder");
    tiny_model(&dir.path().join("in-folder/mmproj-f16.gguf"), "Projector");
    std::fs::create_dir_all(dir.path().join("in-folder/deeper")).unwrap();
    tiny_model(&dir.path().join("in-folder/deeper/ignored.gguf"), "Deep");
    std::fs::write(
        dir.path().join("corrupt.gguf"),
        b"GGUF\x03\x00\x00\x00garbage",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a model").unwrap();
    tiny_model(&dir.path().join(".hidden.gguf"), "Hidden");
    let outside = tempfile::tempdir().unwrap();
    tiny_model(&outside.path().join("outside.gguf"), "Outside");
    std::os::unix::fs::symlink(
        outside.path().join("outside.gguf"),
        dir.path().join("escape.gguf"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("single.gguf"),
        dir.path().join("alias.gguf"),
    )
    .unwrap();

    let d = Daemon::start(dir.path(), &[]).await;
    // Files written just now are held back until they settle (they may be mid-copy).
    d.wait_for("all five models", |m| m.len() == 5).await;
    let models = d.models().await;
    let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        ["alias", "corrupt", "in-folder", "sharded", "single"],
        "{models:#?}"
    );

    let sharded = &models[3];
    assert_eq!(state(sharded), "discovered");
    assert_eq!(sharded.files.len(), 3);
    assert!(sharded.files[2].ends_with("sharded-00003-of-00003.gguf"));
    let folder = &models[2];
    assert_eq!(folder.name, "Folder");
    assert!(folder.projector.ends_with("mmproj-f16.gguf"), "{folder:?}");
    let corrupt = &models[1];
    assert_eq!(state(corrupt), "failed");
    assert!(
        corrupt.failure_reason.contains("corrupt.gguf: at byte"),
        "{corrupt:?}"
    );

    // A bad file cannot be loaded, and says why.
    let err = load(&d, "corrupt").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("corrupt.gguf"), "{err:?}");
    let err = load(&d, "no-such-model").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = d
        .client()
        .await
        .get_model(pb::GetModelRequest { id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // The split set loads as one model, all three shards.
    let m = load(&d, "sharded").await.unwrap();
    assert_eq!(state(&m), "ready");
    assert_eq!(m.resident_bytes, m.size_bytes);
}

#[tokio::test]
async fn hot_reload_adds_waits_for_complete_copies_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    // The settle time must stay well above the copy's pauses below (120 ms)
    // even on a loaded machine, or a pause reads as a finished copy.
    let d = Daemon::start(dir.path(), &["--watch-debounce-ms", "1000"]).await;
    assert!(d.models().await.is_empty());

    tiny_model(&dir.path().join("added.gguf"), "Added");
    d.wait_for("added model", |m| {
        m.iter()
            .any(|m| m.id == "added" && state(m) == "discovered")
    })
    .await;

    // A copy in progress: written in pieces, never listed until complete.
    let source = dir.path().join("source.bin");
    tiny_model(&source, "Copied");
    let bytes = std::fs::read(&source).unwrap();
    std::fs::remove_file(&source).unwrap();
    let target = dir.path().join("copied.gguf");
    let mut file = std::fs::File::create(&target).unwrap();
    for chunk in bytes.chunks(bytes.len() / 8 + 1) {
        std::io::Write::write_all(&mut file, chunk).unwrap();
        file.sync_data().unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        let listed = d.model("copied").await;
        assert!(
            listed.is_none() || std::fs::metadata(&target).unwrap().len() == bytes.len() as u64,
            "half-written file listed: {listed:?}"
        );
    }
    drop(file);
    d.wait_for("completed copy", |m| {
        m.iter()
            .any(|m| m.id == "copied" && state(m) == "discovered")
    })
    .await;

    // Removing a loaded model unloads it first, then drops it from the list.
    load(&d, "copied").await.unwrap();
    let mut events = d.events().await;
    std::fs::remove_file(&target).unwrap();
    d.wait_for("removal", |m| m.iter().all(|m| m.id != "copied"))
        .await;
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(
        (first.id.as_str(), first.state),
        ("copied", pb::ModelState::Unloading as i32)
    );
    assert!(first.reason.contains("removed"), "{first:?}");
}

#[tokio::test]
async fn a_missing_models_dir_is_watched_for() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("later");
    let d = Daemon::start(&dir, &[]).await;
    assert!(d.models().await.is_empty());
    std::fs::create_dir(&dir).unwrap();
    tiny_model(&dir.join("late.gguf"), "Late");
    d.wait_for("model in a directory created after start", |m| {
        m.iter().any(|m| m.id == "late")
    })
    .await;
}

#[tokio::test]
async fn models_max_evicts_the_least_recently_used_idle_model() {
    let dir = tempfile::tempdir().unwrap();
    for id in ["a", "b", "c"] {
        tiny_model(&dir.path().join(format!("{id}.gguf")), id);
    }
    let d = Daemon::start(dir.path(), &["--models-max", "2"]).await;
    load(&d, "a").await.unwrap();
    load(&d, "b").await.unwrap();
    load(&d, "a").await.unwrap(); // a is now more recently used than b
    load(&d, "c").await.unwrap();
    let states: Vec<(String, &str)> = d
        .models()
        .await
        .iter()
        .map(|m| (m.id.clone(), state(m)))
        .collect();
    assert_eq!(
        states,
        [
            ("a".into(), "ready"),
            ("b".into(), "unloaded"),
            ("c".into(), "ready")
        ]
    );
    let status = d.status().await;
    assert_eq!(status.models_max, 2);
    assert_eq!(status.models_by_state["ready"], 2);
}

#[tokio::test]
async fn twenty_concurrent_loads_of_one_model_load_it_once() {
    let dir = tempfile::tempdir().unwrap();
    sparse_model(&dir.path().join("big.gguf"), 256 << 20);
    let d = Daemon::start(dir.path(), &["--prefetch-threads", "1"]).await;
    let mut events = d.events().await;
    let socket = d.socket.display().to_string();
    let loads: Vec<_> = (0..20)
        .map(|_| tokio::spawn(load_via(socket.clone(), "big".to_owned())))
        .collect();
    for l in loads {
        assert_eq!(state(&l.await.unwrap().unwrap()), "ready");
    }
    let mut transitions = Vec::new();
    while let Ok(Some(Ok(e))) =
        tokio::time::timeout(Duration::from_millis(300), events.next()).await
    {
        transitions.push(llama_router::api::convert::state_name(e.state));
    }
    assert_eq!(transitions, ["loading", "ready"], "one load, not twenty");
}

#[tokio::test]
async fn a_loading_model_is_not_evicted_and_the_next_load_waits() {
    let dir = tempfile::tempdir().unwrap();
    sparse_model(&dir.path().join("slow.gguf"), 1 << 30);
    tiny_model(&dir.path().join("quick.gguf"), "quick");
    let d = Daemon::start(
        dir.path(),
        &["--models-max", "1", "--prefetch-threads", "1"],
    )
    .await;
    let slow = tokio::spawn(load_via(d.socket.display().to_string(), "slow".to_owned()));
    d.wait_for("slow model loading", |m| {
        m.iter().any(|m| m.id == "slow" && state(m) == "loading")
    })
    .await;
    let mut quick = start_load(&d, "quick").await;
    let first = quick.next().await.unwrap().unwrap();
    assert_eq!(
        first.phase,
        Phase::Queued as i32,
        "must wait for the loading model"
    );
    // The slow load completes (it was not evicted) ...
    assert_eq!(state(&slow.await.unwrap().unwrap()), "ready");
    // ... then, idle, it is evicted for the waiting one.
    assert_eq!(state(&finish(quick).await.unwrap()), "ready");
    assert_eq!(state(&d.model("slow").await.unwrap()), "unloaded");
}

#[tokio::test]
async fn pinned_models_are_never_evicted_and_unload_works() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("keep.gguf"), "keep");
    tiny_model(&dir.path().join("other.gguf"), "other");
    let d = Daemon::start(dir.path(), &["--models-max", "1"]).await;
    let out = d.cli(&["pin", "keep"]);
    assert!(out.status.success(), "{out:?}");
    load(&d, "keep").await.unwrap();
    let mut other = start_load(&d, "other").await;
    assert_eq!(
        other.next().await.unwrap().unwrap().phase,
        Phase::Queued as i32
    );
    let waited = tokio::time::timeout(Duration::from_millis(700), other.next()).await;
    assert!(
        waited.is_err(),
        "a pinned model must not be evicted: {waited:?}"
    );
    assert_eq!(state(&d.model("keep").await.unwrap()), "ready");

    // Unloading the pinned model frees the slot for the waiting load.
    let out = d.cli(&["unload", "keep"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "keep: unloaded\n");
    assert_eq!(state(&finish(other).await.unwrap()), "ready");
    let keep = d.model("keep").await.unwrap();
    assert!(keep.pinned);
    assert_eq!(keep.resident_bytes, 0);
}

#[tokio::test]
async fn idle_ttl_unloads_unused_models() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("m.gguf"), "m");
    let d = Daemon::start(dir.path(), &["--idle-ttl", "1"]).await;
    load(&d, "m").await.unwrap();
    d.wait_for("idle unload", |m| {
        m.iter().any(|m| m.id == "m" && state(m) == "unloaded")
    })
    .await;
}

#[tokio::test]
async fn watch_streams_every_transition_in_order() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("m.gguf"), "m");
    let d = Daemon::start(dir.path(), &[]).await;
    let mut events = d.events().await;
    load(&d, "m").await.unwrap();
    d.client()
        .await
        .unload_model(pb::UnloadModelRequest { id: "m".into() })
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = events.next().await.unwrap().unwrap();
        seen.push(format!(
            "{}:{}->{}",
            e.id,
            llama_router::api::convert::state_name(e.previous),
            llama_router::api::convert::state_name(e.state)
        ));
    }
    assert_eq!(
        seen,
        [
            "m:discovered->loading",
            "m:loading->ready",
            "m:ready->unloading",
            "m:unloading->unloaded"
        ]
    );
}

#[tokio::test]
async fn health_and_reflection_answer() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]).await;
    let channel = llama_router::cli::client::connect(&d.socket.display().to_string())
        .await
        .unwrap();
    drop(channel);
    let path = d.socket.clone();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "llama_router.v1.ModelService"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("unexpected reflection response");
    };
    let names: HashSet<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains("llama_router.v1.ModelService"), "{names:?}");
    assert!(names.contains("grpc.health.v1.Health"), "{names:?}");
}

#[tokio::test]
async fn sighup_rescans_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // A long debounce: only SIGHUP can make the new file appear in time.
    let mut d = Daemon::start(dir.path(), &["--watch-debounce-ms", "60000"]).await;
    let mut events = d.events().await;
    // The watch starts with one scan of its own (for changes made before it
    // began); on a busy machine that can come after start-up: let it pass.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("watching the models directory") {
        assert!(std::time::Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    tiny_model(&dir.path().join("new.gguf"), "new");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(d.model("new").await.is_none());
    d.signal("HUP");
    d.wait_for("rescan on SIGHUP", |m| m.iter().any(|m| m.id == "new"))
        .await;

    d.signal("TERM");
    // Promptly, even with a watch stream open.
    let status = d.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}\n{}", d.log_text());
    assert!(!d.socket.exists(), "socket removed on exit");
    let _ = events.next().await; // the stream ended with the daemon
}

#[tokio::test]
async fn cli_client_lists_and_reports_status() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("m.gguf"), "Tiny");
    let d = Daemon::start(dir.path(), &["--models-max", "3"]).await;
    let out = d.cli(&["load", "m"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("m: ready"));
    let out = d.cli(&["models", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["id"], "m");
    assert_eq!(list[0]["state"], "ready");
    assert_eq!(list[0]["name"], "Tiny");
    assert_eq!(list[0]["architecture"], "llama");
    assert!(list[0]["last_used_unix_ms"].as_i64().unwrap() > 0);
    let out = d.cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["models_max"], 3);
    assert_eq!(status["models_by_state"]["ready"], 1);
    let out = d.cli(&["load", "missing"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model named \"missing\""));
}

#[tokio::test]
async fn tcp_listens_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("m.gguf"), "m");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Daemon::start(dir.path(), &["--port", &port.to_string()]).await;
    let out = std::process::Command::new(support::bin())
        .args([
            "models",
            "--json",
            "--endpoint",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"id\":\"m\""));
    assert!(d.log_text().contains(&format!("127.0.0.1:{port}")));
}

#[tokio::test]
async fn a_full_load_queue_is_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    for id in ["a", "b", "c"] {
        tiny_model(&dir.path().join(format!("{id}.gguf")), id);
    }
    let d = Daemon::start(dir.path(), &["--models-max", "1", "--load-queue", "1"]).await;
    d.cli(&["pin", "a"]);
    load(&d, "a").await.unwrap();
    // b waits behind the pinned model and fills the queue ...
    let mut b = start_load(&d, "b").await;
    assert_eq!(b.next().await.unwrap().unwrap().phase, Phase::Queued as i32);
    // ... so c is refused at once.
    let err = load(&d, "c").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("--load-queue"), "{err:?}");
}

#[tokio::test]
async fn host_cache_bytes_limits_what_is_resident() {
    let dir = tempfile::tempdir().unwrap();
    sparse_model(&dir.path().join("m1.gguf"), 6 << 20);
    sparse_model(&dir.path().join("m2.gguf"), 6 << 20);
    sparse_model(&dir.path().join("huge.gguf"), 64 << 20);
    let limit = (10u64 << 20).to_string();
    // No spare worker: its 16 MiB would not leave these models room.
    let d = Daemon::start(
        dir.path(),
        &[
            "--host-cache-bytes",
            &limit,
            "--models-max",
            "0",
            "--no-spare-worker",
        ],
    )
    .await;
    let err = load(&d, "huge").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("--host-cache-bytes"), "{err:?}");
    load(&d, "m1").await.unwrap();
    load(&d, "m2").await.unwrap(); // both do not fit: m1 is evicted
    assert_eq!(state(&d.model("m1").await.unwrap()), "unloaded");
    let status = d.status().await;
    assert!(status.host_cache_bytes_used <= 10 << 20, "{status:?}");
    assert_eq!(status.host_cache_bytes_limit, 10 << 20);
}

#[tokio::test]
async fn mlock_loads_and_locks_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(&dir.path().join("m.gguf"), "m");
    let d = Daemon::start(dir.path(), &["--mlock"]).await;
    match load(&d, "m").await {
        Ok(m) => assert_eq!(state(&m), "ready"),
        // Without the privilege, a clear reason and a failed (not crashed) model.
        Err(e) => {
            assert_eq!(e.code(), Code::Unavailable);
            assert!(e.message().contains("cannot lock"), "{e:?}");
            assert_eq!(state(&d.model("m").await.unwrap()), "failed");
        }
    }
}
