//! Loads: LRU eviction, the bounded queue, single flight, pins and the host cache.

use super::*;
use crate::loader::LoadError;
use crate::settings::ModelSettings;

#[test]
fn loading_past_models_max_evicts_the_least_recently_used_idle_model() {
    let mut h = Harness::with(2, &["a", "b", "c"]);
    h.load_ready("a");
    h.tick(1);
    h.load_ready("b");
    h.tick(1);
    h.lease("a");
    h.release("a"); // a is now the most recently used
    h.take_calls();
    h.causes();
    let c = h.load("c").unwrap();
    assert_eq!(h.unloaded(), ["b"]);
    let evicted = UnloadCause::Evicted(Eviction::ToLoad("c".into()));
    assert_eq!(h.causes(), [("b".to_owned(), evicted)]);
    assert_eq!(*c.borrow(), LoadStatus::Queued, "c waits for b to go");
    h.released("b");
    assert_eq!(h.started(), ["c"]);
    assert_eq!(h.state_of("b"), ModelState::Unloaded);
}

#[test]
fn with_no_use_the_first_loaded_is_evicted_first() {
    let mut h = Harness::with(2, &["a", "b", "c"]);
    h.load_ready("a");
    h.tick(1);
    h.load_ready("b");
    h.take_calls();
    h.load("c").unwrap();
    assert_eq!(h.unloaded(), ["a"]);
}

#[test]
fn a_full_queue_refuses_more_loads() {
    let mut h = Harness::new(
        SupervisorSettings {
            load_queue: 2,
            ..settings(1)
        },
        &[("a", 100), ("b", 100), ("c", 100), ("d", 100)],
    );
    h.load_ready("a");
    h.lease("a"); // busy: nothing can be evicted, loads queue up
    assert_eq!(*h.load("b").unwrap().borrow(), LoadStatus::Queued);
    assert_eq!(*h.load("c").unwrap().borrow(), LoadStatus::Queued);
    match h.load("d") {
        Err(SupervisorError::ResourceExhausted(m)) => assert!(m.contains("--load-queue 2"), "{m}"),
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
}

#[test]
fn queued_loads_start_in_arrival_order() {
    let mut h = Harness::with(1, &["a", "b", "c"]);
    h.load_ready("a");
    h.lease("a");
    h.load("c").unwrap();
    h.load("b").unwrap();
    h.take_calls();
    h.release("a");
    let evicted = UnloadCause::Evicted(Eviction::ToLoad("c".into()));
    assert!(h.causes().contains(&("a".to_owned(), evicted)));
    h.released("a");
    assert_eq!(h.started(), ["c"], "the first to queue loads first");
    h.resident("c"); // idle at once: b, next in the queue, evicts it
    assert_eq!(h.unloaded(), ["c"]);
    h.released("c");
    assert_eq!(h.started(), ["b"]);
}

#[test]
fn a_load_waits_while_its_victim_unloads() {
    let mut h = Harness::with(1, &["a", "b"]);
    h.load_ready("a");
    h.take_calls();
    let b = h.load("b").unwrap();
    assert_eq!(h.state_of("a"), ModelState::Unloading);
    assert!(h.started().is_empty(), "b starts only once a has let go");
    assert_eq!(*b.borrow(), LoadStatus::Queued);
    h.released("a");
    assert_eq!(h.started(), ["b"]);
    assert_eq!(h.state_of("b"), ModelState::Loading);
}

#[test]
fn models_max_zero_means_no_limit() {
    let mut h = Harness::with(0, &["a", "b", "c"]);
    for id in ["a", "b", "c"] {
        h.load_ready(id);
    }
    assert!(h.unloaded().is_empty());
}

#[test]
fn a_second_load_joins_the_first() {
    let mut h = Harness::with(1, &["a"]);
    let first = h.load("a").unwrap();
    let second = h.load("a").unwrap();
    assert_eq!(h.started(), ["a"], "one load, however many ask");
    h.resident("a");
    for rx in [first, second] {
        assert!(matches!(*rx.borrow(), LoadStatus::Ready(_)));
    }
}

#[test]
fn loading_a_ready_model_answers_at_once() {
    let mut h = Harness::with(1, &["a"]);
    h.load_ready("a");
    h.take_calls();
    let rx = h.load("a").unwrap();
    assert!(matches!(*rx.borrow(), LoadStatus::Ready(_)));
    assert!(h.take_calls().is_empty());
}

#[test]
fn a_busy_model_is_never_evicted() {
    let mut h = Harness::with(1, &["a", "b"]);
    h.load_ready("a");
    h.lease("a");
    h.take_calls();
    let b = h.load("b").unwrap();
    assert!(h.unloaded().is_empty(), "a is in use");
    assert_eq!(*b.borrow(), LoadStatus::Queued);
    h.release("a");
    assert_eq!(h.unloaded(), ["a"], "idle again: it makes room for b");
}

#[test]
fn a_pinned_model_is_never_evicted() {
    let mut h = Harness::with(1, &["a", "b"]);
    h.load_ready("a");
    h.state.pin("a", true).unwrap();
    h.take_calls();
    assert_eq!(*h.load("b").unwrap().borrow(), LoadStatus::Queued);
    assert!(h.unloaded().is_empty());
}

#[test]
fn a_model_pinned_in_the_config_is_never_evicted() {
    let table = ModelSettings {
        pin: Some(true),
        ..ModelSettings::default()
    };
    let settings = with_table(1, ModelSettings::default(), table);
    let mut h = Harness::new(settings, &[("a", 100), ("b", 100)]);
    assert!(h.state.view("a").unwrap().pinned);
    h.load_ready("a");
    h.take_calls();
    h.load("b").unwrap();
    assert!(h.unloaded().is_empty());
}

#[test]
fn a_loading_model_is_never_evicted() {
    let mut h = Harness::with(1, &["a", "b"]);
    h.load("a").unwrap();
    h.take_calls();
    assert_eq!(*h.load("b").unwrap().borrow(), LoadStatus::Queued);
    assert!(h.unloaded().is_empty());
}

#[test]
fn a_model_bigger_than_the_host_cache_is_refused() {
    let settings = SupervisorSettings {
        host_cache_bytes: 150,
        ..settings(0)
    };
    let mut h = Harness::new(settings, &[("a", 200)]);
    match h.load("a") {
        Err(SupervisorError::ResourceExhausted(m)) => {
            assert!(m.contains("--host-cache-bytes is 150"), "{m}")
        }
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
    assert!(h.started().is_empty());
}

#[test]
fn the_spare_workers_reserve_counts_in_the_host_cache() {
    let settings = SupervisorSettings {
        host_cache_bytes: 250,
        host_cache_reserved: 60,
        ..settings(0)
    };
    let mut h = Harness::new(settings, &[("a", 100), ("b", 100), ("big", 200)]);
    match h.load("big") {
        Err(SupervisorError::ResourceExhausted(m)) => {
            assert!(m.contains("60 of it held by the spare worker"), "{m}")
        }
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
    h.load_ready("a");
    h.tick(1);
    h.take_calls();
    // 60 + 100 + 100 is over 250: a goes for b.
    h.load("b").unwrap();
    assert_eq!(h.unloaded(), ["a"]);
}

#[test]
fn a_full_host_cache_evicts_to_make_room() {
    let settings = SupervisorSettings {
        host_cache_bytes: 250,
        ..settings(0)
    };
    let mut h = Harness::new(settings, &[("a", 100), ("b", 100), ("c", 100)]);
    h.load_ready("a");
    h.tick(1);
    h.load_ready("b");
    h.take_calls();
    h.load("c").unwrap();
    assert_eq!(
        h.unloaded(),
        ["a"],
        "200 + 100 bytes exceed the 250-byte cache"
    );
    assert_eq!(h.state.status().host_cache_used, 200);
}

#[test]
fn unloading_a_queued_model_cancels_its_load() {
    let mut h = Harness::with(1, &["a", "b"]);
    h.load_ready("a");
    h.lease("a");
    let b = h.load("b").unwrap();
    let (reply, mut answer) = oneshot::channel();
    h.state.unload("b", reply, h.now);
    assert_eq!(
        answer.try_recv().unwrap().unwrap().state,
        ModelState::Discovered
    );
    assert!(
        matches!(&*b.borrow(), LoadStatus::Failed(SupervisorError::Unavailable(m)) if m.contains("cancelled")),
        "{:?}",
        *b.borrow()
    );
    h.take_calls();
    h.release("a");
    assert!(h.unloaded().is_empty(), "nothing waits for room any more");
}

#[test]
fn reports_of_an_earlier_load_are_ignored() {
    let mut h = Harness::with(1, &["a"]);
    h.load("a").unwrap();
    let (reply, _answer) = oneshot::channel();
    h.state.unload("a", reply, h.now);
    h.released("a");
    h.load("a").unwrap();
    let stale = RuntimeReport {
        id: "a".to_owned(),
        generation: 1,
        report: ModelReport::Ready { bytes: 100 },
    };
    h.state.on_report(stale, h.now);
    assert_eq!(h.state_of("a"), ModelState::Loading, "generation 1 is over");
    h.resident("a");
    assert_eq!(h.state_of("a"), ModelState::Ready);
}

#[test]
fn a_bad_file_fails_the_load_for_everyone_waiting() {
    let mut h = Harness::with(1, &["a"]);
    let rx = h.load("a").unwrap();
    let mut lease = h.acquire("a");
    let bad = crate::gguf::GgufError::format(
        "/models/a.gguf",
        0,
        crate::gguf::Problem::NotGguf {
            found: "nope".into(),
        },
    );
    h.report("a", ModelReport::Failed(LoadError::Invalid(bad)));
    assert_eq!(h.state_of("a"), ModelState::Failed);
    assert!(matches!(
        *rx.borrow(),
        LoadStatus::Failed(SupervisorError::FailedPrecondition(_))
    ));
    assert!(matches!(
        lease_error(&mut lease),
        SupervisorError::FailedPrecondition(_)
    ));
}
