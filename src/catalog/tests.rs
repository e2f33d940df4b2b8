//! Scans that meet I/O errors keep what they cannot read; headers past the
//! caps are listed as failed with the limit.

use std::io;
use std::path::Path;
use std::time::Duration;

use super::scan::{DirItem, HeaderCache, list_dir, scan, scan_with};
use super::{CatalogEntry, CatalogHandle};
use crate::gguf::writer::GgufWriter;
use crate::gguf::{GgmlType, HeaderLimits, Value};

fn model(path: &Path, name: &str) {
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("general.name", Value::String(name.into()))
        .tensor("w", GgmlType::F32, &[32])
        .write(path)
        .unwrap();
}

fn ids(entries: &[CatalogEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

/// A listing that fails with EMFILE for `bad` and reads everything else.
fn failing_on(bad: &Path) -> impl Fn(&Path) -> io::Result<Vec<DirItem>> + Sync + '_ {
    move |dir: &Path| {
        if dir.ends_with(bad) {
            Err(io::Error::from_raw_os_error(libc::EMFILE))
        } else {
            list_dir(dir)
        }
    }
}

#[test]
fn a_root_that_cannot_be_listed_fails_the_scan_instead_of_listing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    model(&dir.path().join("a.gguf"), "A");
    let caps = HeaderLimits::default();
    let mut cache = HeaderCache::default();
    let first = scan(dir.path(), &[], &mut cache, Duration::ZERO, &caps).unwrap();
    assert_eq!(ids(&first.entries), ["a"]);
    let root = dir.path().canonicalize().unwrap();
    let err = scan_with(
        dir.path(),
        &first.entries,
        &mut cache,
        Duration::ZERO,
        &caps,
        &failing_on(&root),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cannot read the models directory") && text.contains("Too many open files"),
        "{text}"
    );
    let missing = dir.path().join("nowhere");
    let err = scan(&missing, &first.entries, &mut cache, Duration::ZERO, &caps).unwrap_err();
    assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
}

#[test]
fn a_folder_that_cannot_be_listed_keeps_its_entry_while_the_rest_updates() {
    let dir = tempfile::tempdir().unwrap();
    model(&dir.path().join("a.gguf"), "A");
    std::fs::create_dir(dir.path().join("f")).unwrap();
    model(&dir.path().join("f").join("model.gguf"), "F");
    let caps = HeaderLimits::default();
    let mut cache = HeaderCache::default();
    let first = scan(dir.path(), &[], &mut cache, Duration::ZERO, &caps).unwrap();
    assert_eq!(ids(&first.entries), ["a", "f"]);
    // a.gguf really goes; folder f cannot be read this time.
    std::fs::remove_file(dir.path().join("a.gguf")).unwrap();
    model(&dir.path().join("b.gguf"), "B");
    let second = scan_with(
        dir.path(),
        &first.entries,
        &mut cache,
        Duration::ZERO,
        &caps,
        &failing_on(Path::new("f")),
    )
    .unwrap();
    assert_eq!(ids(&second.entries), ["b", "f"]);
    assert_eq!(second.entries[1], first.entries[1]);
    assert_eq!(second.problems.len(), 1, "{:?}", second.problems);
    assert!(second.problems[0].contains("cannot read folder"));
    // Readable again: nothing left to retry.
    let third = scan(
        dir.path(),
        &second.entries,
        &mut cache,
        Duration::ZERO,
        &caps,
    )
    .unwrap();
    assert_eq!(ids(&third.entries), ["b", "f"]);
    assert!(third.problems.is_empty());
}

#[test]
fn a_header_past_the_caps_is_listed_failed_with_the_limit_and_its_key() {
    let dir = tempfile::tempdir().unwrap();
    GgufWriter::new()
        .kv("general.name", Value::String("n".repeat(10_000)))
        .write(&dir.path().join("big.gguf"))
        .unwrap();
    model(&dir.path().join("ok.gguf"), "Ok");
    let caps = HeaderLimits {
        max_value_bytes: 4096,
        max_metadata_bytes: 1 << 20,
    };
    let mut cache = HeaderCache::default();
    let result = scan(dir.path(), &[], &mut cache, Duration::ZERO, &caps).unwrap();
    assert_eq!(ids(&result.entries), ["big", "ok"]);
    let reason = result.entries[0].info.as_ref().unwrap_err();
    assert!(
        reason.contains("general.name")
            && reason.contains("4096")
            && reason.contains("max_metadata_value_bytes"),
        "{reason}"
    );
    assert!(result.entries[1].info.is_ok());
    assert!(
        result.problems.is_empty(),
        "a bad file is not an I/O problem"
    );
}

#[tokio::test]
async fn the_actor_keeps_the_list_while_the_directory_is_away() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("models");
    std::fs::create_dir(&dir).unwrap();
    model(&dir.join("a.gguf"), "A");
    let catalog = CatalogHandle::spawn(dir.clone(), Duration::ZERO, HeaderLimits::default());
    let first = catalog.rescan().await.unwrap();
    assert_eq!(
        (ids(&first.entries), first.problem.is_none()),
        (vec!["a"], true)
    );
    std::fs::rename(&dir, parent.path().join("away")).unwrap();
    let away = catalog.rescan().await.unwrap();
    assert_eq!(ids(&away.entries), ["a"]);
    assert!(!away.dir_exists);
    let problem = away.problem.clone().unwrap();
    assert!(
        problem.contains("keeping the last list (1 models)"),
        "{problem}"
    );
    std::fs::rename(parent.path().join("away"), &dir).unwrap();
    let back = catalog.rescan().await.unwrap();
    assert_eq!(
        (ids(&back.entries), back.problem.is_none()),
        (vec!["a"], true)
    );
    assert_eq!(back.entries, first.entries);
}

#[test]
fn opening_or_reading_a_file_is_no_reason_to_rescan_but_a_finished_write_is() {
    use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind};
    for quiet in [
        EventKind::Access(AccessKind::Open(AccessMode::Any)),
        EventKind::Access(AccessKind::Open(AccessMode::Read)),
        EventKind::Access(AccessKind::Read),
        EventKind::Access(AccessKind::Close(AccessMode::Read)),
    ] {
        assert!(!super::may_change_the_list(&quiet), "{quiet:?}");
    }
    for change in [
        EventKind::Access(AccessKind::Close(AccessMode::Write)),
        EventKind::Create(CreateKind::File),
        EventKind::Modify(ModifyKind::Any),
        EventKind::Remove(RemoveKind::File),
        EventKind::Any,
        EventKind::Other,
    ] {
        assert!(super::may_change_the_list(&change), "{change:?}");
    }
}

/// Waits (up to 5 s) until `catalog` has scanned more than `than` times.
async fn scanned_past(catalog: &CatalogHandle, than: u64) -> bool {
    for _ in 0..100 {
        if catalog.scans() > than {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn an_idle_directory_is_not_scanned_again_nor_one_whose_models_are_read() {
    let dir = tempfile::tempdir().unwrap();
    model(&dir.path().join("a.gguf"), "A");
    let debounce = Duration::from_millis(40);
    let catalog = CatalogHandle::spawn(dir.path().to_path_buf(), debounce, HeaderLimits::default());
    // The watch starts on the first poll and scans once.
    assert!(scanned_past(&catalog, 0).await, "the catalog never scanned");
    tokio::time::sleep(debounce * 5).await;
    let settled = catalog.scans();
    std::fs::read(dir.path().join("a.gguf")).unwrap();
    tokio::time::sleep(debounce * 15).await;
    assert_eq!(
        catalog.scans(),
        settled,
        "scans went on in an idle directory whose model was only read"
    );
    // The watch still works: a new model is a reason.
    model(&dir.path().join("b.gguf"), "B");
    assert!(
        scanned_past(&catalog, settled).await,
        "a new model did not rescan"
    );
}

/// Waits (up to 10 s: the directory is checked every 2 s) until the published
/// list is `want`.
async fn listed(catalog: &CatalogHandle, want: &[&str]) -> bool {
    let mut snapshots = catalog.subscribe();
    let wait = async {
        loop {
            if ids(&snapshots.borrow_and_update().entries) == want {
                return;
            }
            if snapshots.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .is_ok()
}

#[tokio::test]
async fn a_directory_renamed_over_the_path_is_watched_in_its_place() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("models");
    std::fs::create_dir(&dir).unwrap();
    model(&dir.join("a.gguf"), "A");
    let catalog = CatalogHandle::spawn(
        dir.clone(),
        Duration::from_millis(40),
        HeaderLimits::default(),
    );
    assert!(listed(&catalog, &["a"]).await);
    let new = parent.path().join("new");
    std::fs::create_dir(&new).unwrap();
    model(&new.join("b.gguf"), "B");
    std::fs::rename(&dir, parent.path().join("old")).unwrap();
    std::fs::rename(&new, &dir).unwrap();
    assert!(
        listed(&catalog, &["b"]).await,
        "the new directory was not scanned"
    );
    // Found by a watch on the new directory, not the old one's.
    model(&dir.join("c.gguf"), "C");
    assert!(
        listed(&catalog, &["b", "c"]).await,
        "a model added to the new directory went unseen"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unprompted_scan_comes_once_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    model(&dir.path().join("a.gguf"), "A");
    let catalog = CatalogHandle::spawn(
        dir.path().to_path_buf(),
        Duration::from_millis(40),
        HeaderLimits::default(),
    );
    assert!(listed(&catalog, &["a"]).await);
    let settled = catalog.scans();
    tokio::time::sleep(super::SAFETY_RESCAN - Duration::from_secs(5)).await;
    assert_eq!(catalog.scans(), settled, "scanned before the minute was up");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        scanned_past(&catalog, settled).await,
        "no scan after a minute"
    );
}
