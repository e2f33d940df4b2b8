//! Supervisor rules through its handle, on a real catalog of small files.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::gguf::writer::GgufWriter;
use crate::gguf::{GgmlType, Value};

fn write_model(dir: &Path, id: &str) {
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .tensor("w", GgmlType::F32, &[64])
        .write(&dir.join(format!("{id}.gguf")))
        .unwrap();
}

async fn supervisor(dir: &Path, models_max: u32, autoload: bool) -> SupervisorHandle {
    let catalog = CatalogHandle::spawn(dir.to_path_buf(), Duration::from_millis(50));
    catalog.rescan().await.unwrap();
    SupervisorHandle::spawn(
        catalog,
        Limits {
            models_max,
            host_cache_bytes: 0,
            load_queue: 8,
            idle_ttl: None,
            load: LoadOptions {
                mlock: false,
                threads: 1,
            },
            autoload,
        },
    )
}

#[tokio::test]
async fn a_busy_model_is_not_evicted_until_its_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "a");
    write_model(dir.path(), "b");
    let sup = supervisor(dir.path(), 1, true).await;
    let lease = sup.acquire("a").await.unwrap(); // autoloads it
    assert_eq!(lease.model(), "a");
    assert_eq!(sup.get("a").await.unwrap().state, ModelState::Ready);

    let b = sup.load("b").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *b.borrow(),
        LoadStatus::Queued,
        "b must wait while a is in use"
    );
    assert_eq!(sup.get("a").await.unwrap().state, ModelState::Ready);

    drop(lease);
    let b = sup.load_and_wait("b").await.unwrap();
    assert_eq!(b.state, ModelState::Ready);
    assert_eq!(sup.get("a").await.unwrap().state, ModelState::Unloaded);
}

#[tokio::test]
async fn two_leases_keep_a_model_busy_until_both_end() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "a");
    write_model(dir.path(), "b");
    let sup = supervisor(dir.path(), 1, true).await;
    let first = sup.acquire("a").await.unwrap();
    let second = sup.acquire("a").await.unwrap();
    let b = sup.load("b").await.unwrap();
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*b.borrow(), LoadStatus::Queued);
    drop(second);
    assert_eq!(
        sup.load_and_wait("b").await.unwrap().state,
        ModelState::Ready
    );
}

#[tokio::test]
async fn without_autoload_a_model_must_be_loaded_first() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "a");
    let sup = supervisor(dir.path(), 1, false).await;
    let err = sup.acquire("a").await.unwrap_err();
    assert!(
        matches!(&err, SupervisorError::FailedPrecondition(m) if m.contains("autoload")),
        "{err}"
    );
    sup.load_and_wait("a").await.unwrap();
    sup.acquire("a").await.unwrap();
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
    let sup = supervisor(dir.path(), 1, true).await;
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
