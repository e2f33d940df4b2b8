//! The supervisor through its handle, on a real catalog of small files and
//! stand-in worker programs: the actor loop, the model actor and a real
//! process exit, end to end.

use std::path::Path;
use std::time::Duration;

use super::super::*;
use super::worker_settings;
use crate::gguf::writer::GgufWriter;
use crate::gguf::{GgmlType, Value};
use crate::worker::process::WorkerEnv;

fn write_model(dir: &Path, id: &str) {
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .tensor("w", GgmlType::F32, &[64])
        .write(&dir.join(format!("{id}.gguf")))
        .unwrap();
}

/// A supervisor whose workers are `worker` (a stand-in program: these tests
/// cover the rules, the real worker is covered by the integration tests).
async fn supervisor(
    dir: &Path,
    models_max: u32,
    autoload: bool,
    worker: &Path,
) -> SupervisorHandle {
    let catalog = CatalogHandle::spawn(
        dir.to_path_buf(),
        Duration::from_millis(50),
        Default::default(),
    );
    catalog.rescan().await.unwrap();
    SupervisorHandle::spawn(
        catalog,
        SupervisorSettings {
            models_max,
            host_cache_bytes: 0,
            host_cache_reserved: 0,
            park_bytes: 0,
            load_queue: 8,
            idle_ttl: None,
            load: LoadOptions {
                mlock: false,
                threads: 1,
                header: Default::default(),
            },
            autoload,
            worker: worker_settings(),
            profiles: Default::default(),
        },
        WorkerEnv {
            crashes: None,
            exe: worker.to_path_buf(),
            wrapper: Vec::new(),
            socket_dir: dir.to_path_buf(),
            log_level: "info".into(),
            gpus: Default::default(),
            logs: Default::default(),
            spares: crate::worker::spare::Spares::new(false),
        },
    )
}

/// A stand-in worker that never becomes ready.
fn slow_worker(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("slow-worker.sh");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn a_model_whose_worker_is_starting_is_busy_and_not_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    write_model(&models, "a");
    write_model(&models, "b");
    let sup = supervisor(&models, 1, true, &slow_worker(dir.path())).await;
    let waiting = tokio::spawn({
        let sup = sup.clone();
        async move { sup.acquire("a").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sup.get("a").await.unwrap().state, ModelState::Ready);
    let b = sup.load("b").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *b.borrow(),
        LoadStatus::Queued,
        "b must wait while a is in use"
    );

    sup.unload("a").await.unwrap();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, SupervisorError::Unavailable(m) if m.contains("cancelled")),
        "{err}"
    );
    assert_eq!(
        sup.load_and_wait("b").await.unwrap().state,
        ModelState::Ready
    );
}

#[tokio::test]
async fn a_worker_that_keeps_failing_fails_the_model_and_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "a");
    let sup = supervisor(dir.path(), 1, true, Path::new("/bin/false")).await;
    let err = sup.acquire("a").await.unwrap_err();
    assert!(
        matches!(&err, SupervisorError::Unavailable(m) if m.contains("worker exited with code 1")),
        "{err}"
    );
    let a = sup.get("a").await.unwrap();
    assert_eq!(a.state, ModelState::Failed);
    assert!(a.failure_reason.unwrap().contains("exited with code 1"));
    // The first crash restarts at once; the second in a row backs off.
    let err = sup.acquire("a").await.unwrap_err();
    assert!(
        matches!(&err, SupervisorError::Unavailable(m) if m.contains("automatic restarts wait 1 s")),
        "{err}"
    );
    let err = sup.acquire("a").await.unwrap_err();
    assert!(
        matches!(&err, SupervisorError::Unavailable(m) if m.contains("crashed 2 times in a row")),
        "{err}"
    );
}

#[tokio::test]
async fn without_autoload_a_model_must_be_loaded_first() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "a");
    let sup = supervisor(dir.path(), 1, false, Path::new("/bin/false")).await;
    let err = sup.acquire("a").await.unwrap_err();
    assert!(
        matches!(&err, SupervisorError::FailedPrecondition(m) if m.contains("autoload")),
        "{err}"
    );
    sup.load_and_wait("a").await.unwrap();
    // Loaded: now the request goes as far as starting its worker.
    let err = sup.acquire("a").await.unwrap_err();
    assert!(
        matches!(&err, SupervisorError::Unavailable(m) if m.contains("worker")),
        "{err}"
    );
    assert!(matches!(
        sup.acquire("nope").await,
        Err(SupervisorError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_waiting_acquire_gets_the_error_when_its_load_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "a");
    write_model(dir.path(), "b");
    let sup = supervisor(dir.path(), 1, true, Path::new("/bin/false")).await;
    sup.pin("a", true).await.unwrap();
    sup.load_and_wait("a").await.unwrap();
    let waiting = tokio::spawn({
        let sup = sup.clone();
        async move { sup.acquire("b").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sup.unload("b").await.unwrap();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, SupervisorError::Unavailable(m) if m.contains("cancelled")),
        "{err}"
    );
}
