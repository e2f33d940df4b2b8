//! The idle TTL, rescans of the directory and config reloads (SIGHUP).

use super::*;
use crate::settings::ModelSettings;

fn with_ttl(secs: u64, ids: &[&str]) -> Harness {
    let settings = SupervisorSettings {
        idle_ttl: Some(Duration::from_secs(secs)),
        ..settings(0)
    };
    let models: Vec<(&str, u64)> = ids.iter().map(|&id| (id, 100)).collect();
    Harness::new(settings, &models)
}

#[test]
fn an_idle_model_is_unloaded_after_its_ttl() {
    let mut h = with_ttl(10, &["a"]);
    h.load_ready("a");
    h.take_calls();
    h.tick(9);
    h.state.expire_idle(h.now);
    assert!(h.unloaded().is_empty(), "9 s is not 10");
    h.tick(1);
    h.state.expire_idle(h.now);
    assert_eq!(h.unloaded(), ["a"]);
    let idle = UnloadCause::Idle(Duration::from_secs(10));
    assert!(h.causes().contains(&("a".to_owned(), idle)));
}

#[test]
fn use_restarts_the_idle_clock() {
    let mut h = with_ttl(10, &["a"]);
    h.load_ready("a");
    h.tick(8);
    h.lease("a");
    h.release("a");
    h.take_calls();
    h.tick(8);
    h.state.expire_idle(h.now);
    assert!(h.unloaded().is_empty(), "used 8 s ago");
}

#[test]
fn a_busy_or_pinned_model_outlives_its_ttl() {
    let mut h = with_ttl(10, &["a", "b"]);
    h.load_ready("a");
    h.load_ready("b");
    h.lease("a");
    h.state.pin("b", true).unwrap();
    h.take_calls();
    h.tick(100);
    h.state.expire_idle(h.now);
    assert!(h.unloaded().is_empty());
}

#[test]
fn a_model_table_sets_its_own_ttl() {
    let never = ModelSettings {
        idle_ttl: Some(0),
        ..ModelSettings::default()
    };
    let defaults = ModelSettings {
        idle_ttl: Some(5),
        ..ModelSettings::default()
    };
    let settings = SupervisorSettings {
        idle_ttl: Some(Duration::from_secs(1000)),
        ..with_table(0, defaults, never)
    };
    let mut h = Harness::new(settings, &[("a", 100), ("b", 100)]);
    h.load_ready("a");
    h.load_ready("b");
    h.take_calls();
    h.tick(5);
    h.state.expire_idle(h.now);
    assert_eq!(
        h.unloaded(),
        ["b"],
        "a never expires, b after the defaults' 5 s"
    );
}

#[test]
fn a_rescan_adds_new_models_and_forgets_gone_ones() {
    let mut h = Harness::with(1, &["a", "b"]);
    h.entries.retain(|e| e.id != "b");
    h.entries.push(entry("c", 100));
    let summary = h.rescan();
    assert_eq!((summary.models, summary.added, summary.removed), (2, 1, 1));
    assert_eq!(h.state_of("c"), ModelState::Discovered);
    assert!(matches!(
        h.state.view("b"),
        Err(SupervisorError::NotFound(_))
    ));
}

#[test]
fn a_loaded_model_removed_from_the_directory_unloads_then_goes() {
    let mut h = Harness::with(1, &["a"]);
    h.load_ready("a");
    h.take_calls();
    h.causes();
    h.entries.clear();
    h.rescan();
    assert_eq!(h.unloaded(), ["a"]);
    assert_eq!(h.causes(), [("a".to_owned(), UnloadCause::Removed)]);
    assert!(h.state.list().is_empty(), "clients no longer see it");
    assert!(h.state.models.contains_key("a"), "kept until released");
    h.released("a");
    assert!(!h.state.models.contains_key("a"));
}

#[test]
fn changed_files_unload_a_loaded_model() {
    let mut h = Harness::with(1, &["a"]);
    h.load_ready("a");
    h.take_calls();
    h.causes();
    h.entries[0].fingerprint = vec![(100, SystemTime::UNIX_EPOCH + Duration::from_secs(1))];
    let summary = h.rescan();
    assert_eq!(summary.changed, 1);
    assert_eq!(h.unloaded(), ["a"]);
    assert_eq!(h.causes(), [("a".to_owned(), UnloadCause::FilesChanged)]);
    h.released("a");
    assert_eq!(h.state_of("a"), ModelState::Unloaded);
}

#[test]
fn a_snapshot_already_seen_changes_nothing() {
    let mut h = Harness::with(1, &["a"]);
    let same = Snapshot {
        generation: h.catalog_generation,
        dir_exists: true,
        entries: Vec::new(),
        problem: None,
    };
    h.state.reconcile(&same, h.now);
    assert_eq!(h.state_of("a"), ModelState::Discovered);
}

#[test]
fn lowering_models_max_evicts_the_least_recently_used() {
    let mut h = Harness::with(3, &["a", "b", "c"]);
    for id in ["a", "b", "c"] {
        h.load_ready(id);
        h.tick(1);
    }
    h.lease("a");
    h.release("a"); // a is the most recently used now
    h.take_calls();
    h.causes();
    h.state.apply_settings(settings(1), h.now);
    assert_eq!(h.unloaded(), ["b", "c"]);
    let lowered = UnloadCause::Evicted(Eviction::ModelsMaxLowered(1));
    assert_eq!(
        h.causes(),
        [("b".to_owned(), lowered.clone()), ("c".to_owned(), lowered)]
    );
    assert_eq!(h.state_of("a"), ModelState::Ready);
}

#[test]
fn raising_models_max_starts_queued_loads() {
    let mut h = Harness::with(1, &["a", "b"]);
    h.load_ready("a");
    h.lease("a");
    h.load("b").unwrap();
    h.take_calls();
    h.state.apply_settings(settings(2), h.now);
    assert_eq!(h.started(), ["b"]);
    assert!(h.unloaded().is_empty());
}

#[test]
fn a_reload_that_changes_a_models_worker_reloads_it_with_the_new_settings() {
    let mut h = Harness::with(1, &["a"]);
    h.load_ready("a");
    h.take_calls();
    h.causes();
    let mut new = settings(1);
    new.worker.params.ctx_size = 512;
    h.state.apply_settings(new, h.now);
    assert_eq!(h.unloaded(), ["a"]);
    assert_eq!(h.causes(), [("a".to_owned(), UnloadCause::Reload)]);
    h.released("a");
    let calls = h.take_calls();
    match calls.as_slice() {
        [Call::Start { id, spec, .. }] => {
            assert_eq!(id, "a");
            assert_eq!(spec.worker.params.ctx_size, 512);
        }
        other => panic!("expected a reload of a, got {other:?}"),
    }
}

#[test]
fn a_reload_that_changes_nothing_keeps_models_serving() {
    let mut h = Harness::with(1, &["a"]);
    h.load_ready("a");
    h.lease("a");
    h.take_calls();
    h.state.apply_settings(settings(1), h.now);
    assert!(h.take_calls().is_empty());
    assert_eq!(h.state_of("a"), ModelState::Ready);
}

#[test]
fn a_long_request_counts_as_use_until_it_ends() {
    let mut h = with_ttl(10, &["a"]);
    h.load_ready("a");
    h.lease("a");
    h.tick(20);
    h.release("a");
    h.take_calls();
    h.state.expire_idle(h.now);
    assert!(h.unloaded().is_empty(), "it was in use until just now");
}
