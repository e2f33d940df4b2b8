//! Parking: an evicted model keeps its worker under `--park-bytes`, a request
//! wakes it, and parked models go first when budgets are short.

use super::*;

/// `models_max` 1, a park budget of `park` bytes, models of 100 bytes.
fn parking(park: u64, ids: &[&str]) -> Harness {
    let models: Vec<(&str, u64)> = ids.iter().map(|&id| (id, 100)).collect();
    let settings = SupervisorSettings {
        park_bytes: park,
        ..settings(1)
    };
    Harness::new(settings, &models)
}

/// `id` loaded with its worker (`pid`) serving one request, then idle.
fn serving(h: &mut Harness, id: &str, pid: u32) {
    h.load_ready(id);
    let mut rx = h.acquire(id);
    h.serve(id, pid);
    assert_eq!(rx.try_recv().ok(), Some(Ok(FakeWorker(pid))));
    h.release(id);
    h.tick(1);
}

fn parks(calls: &[Call]) -> Vec<&str> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Park(id) => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_evicted_model_whose_worker_serves_is_parked_and_the_load_starts_at_once() {
    let mut h = parking(100, &["a", "b"]);
    serving(&mut h, "a", 1);
    h.take_calls();
    let b = h.load("b").unwrap();
    let calls = h.take_calls();
    assert_eq!(parks(&calls), ["a"]);
    assert!(!calls.contains(&Call::Unload("a".into())), "{calls:?}");
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, Call::Start { id, .. } if id == "b")),
        "b starts without waiting for a to go: {calls:?}"
    );
    assert_eq!(h.state_of("a"), ModelState::Parked);
    let view = h.state.view("a").unwrap();
    assert_eq!(view.worker_pid, Some(1), "the parked worker is still there");
    assert!(matches!(*b.borrow(), LoadStatus::Loading(_)));
    let status = h.state.status();
    assert_eq!(status.host_cache_used, 200, "a parked model holds its RAM");
    assert!(status.by_state.contains(&(ModelState::Parked, 1)));
}

#[test]
fn a_request_for_a_parked_model_wakes_its_worker_instead_of_loading_it() {
    let mut h = parking(100, &["a", "b"]);
    serving(&mut h, "a", 1);
    serving(&mut h, "b", 2);
    h.take_calls();
    let mut lease = h.acquire("a");
    let calls = h.take_calls();
    assert_eq!(parks(&calls), ["b"], "b takes a's place in the park");
    assert!(calls.contains(&Call::Wake("a".into())), "{calls:?}");
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Start { .. } | Call::Unload(_))),
        "no load, no unload: {calls:?}"
    );
    assert_eq!(h.state_of("a"), ModelState::Loading);
    assert!(lease.try_recv().is_err(), "the request waits for the wake");
    h.report("a", ModelReport::Woke);
    assert_eq!(h.state_of("a"), ModelState::Ready);
    assert_eq!(
        lease.try_recv().ok(),
        Some(Ok(FakeWorker(1))),
        "the request gets the worker that was parked"
    );
    assert!(
        h.take_calls().is_empty(),
        "no new worker: {:?}",
        h.take_calls()
    );
}

#[test]
fn without_a_park_budget_an_evicted_model_is_unloaded() {
    let mut h = parking(0, &["a", "b"]);
    serving(&mut h, "a", 1);
    h.take_calls();
    h.load("b").unwrap();
    let calls = h.take_calls();
    assert_eq!(calls, [Call::Unload("a".into())]);
    assert_eq!(h.state_of("a"), ModelState::Unloading);
}

#[test]
fn a_model_whose_worker_never_started_is_unloaded_not_parked() {
    let mut h = parking(100, &["a", "b"]);
    h.load_ready("a");
    h.take_calls();
    h.load("b").unwrap();
    assert_eq!(h.take_calls(), [Call::Unload("a".into())]);
}

#[test]
fn a_model_bigger_than_the_park_budget_is_unloaded() {
    let mut h = parking(99, &["a", "b"]);
    serving(&mut h, "a", 1);
    h.take_calls();
    h.load("b").unwrap();
    assert_eq!(h.take_calls(), [Call::Unload("a".into())]);
}

#[test]
fn a_full_park_budget_unloads_the_oldest_parked_model() {
    let mut h = parking(100, &["a", "b", "c"]);
    serving(&mut h, "a", 1);
    serving(&mut h, "b", 2);
    assert_eq!(h.state_of("a"), ModelState::Parked);
    h.take_calls();
    h.causes();
    h.load("c").unwrap();
    let calls = h.take_calls();
    assert_eq!(parks(&calls), ["b"]);
    assert!(calls.contains(&Call::Unload("a".into())), "{calls:?}");
    let full = UnloadCause::Evicted(Eviction::ParkFull(Some("b".into())));
    assert_eq!(h.causes(), [("a".to_owned(), full)]);
    h.released("a");
    assert_eq!(h.started(), ["c"]);
}

#[test]
fn a_short_host_cache_unloads_parked_models_first() {
    let settings = SupervisorSettings {
        park_bytes: 100,
        host_cache_bytes: 200,
        ..settings(1)
    };
    let mut h = Harness::new(settings, &[("a", 100), ("b", 100), ("c", 100)]);
    serving(&mut h, "a", 1);
    serving(&mut h, "b", 2);
    assert_eq!(h.state_of("a"), ModelState::Parked, "a and b fit in 200");
    h.take_calls();
    h.load("c").unwrap();
    assert_eq!(
        h.take_calls(),
        [Call::Unload("a".into())],
        "a gives its RAM back"
    );
    assert_eq!(h.state_of("b"), ModelState::Ready);
    h.released("a");
    let calls = h.take_calls();
    assert_eq!(parks(&calls), ["b"], "then b is parked in its place");
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, Call::Start { id, .. } if id == "c")),
        "{calls:?}"
    );
    assert_eq!(h.state.status().host_cache_used, 200);
}

#[test]
fn a_parked_worker_that_crashes_fails_the_model_and_a_request_loads_it_again() {
    let mut h = parking(100, &["a", "b"]);
    serving(&mut h, "a", 1);
    h.load("b").unwrap();
    h.take_calls();
    h.report("a", ModelReport::WorkerFailed(killed(9)));
    assert_eq!(h.state_of("a"), ModelState::Failed);
    let view = h.state.view("a").unwrap();
    assert!(
        view.failure_reason.is_some_and(|r| r.contains("SIGKILL")),
        "the reason names the signal"
    );
    assert_eq!(h.take_calls(), [Call::Unload("a".into())]);
    h.released("a");
    h.resident("b");
    h.take_calls();
    let _a = h.acquire("a");
    h.released("b"); // b was idle: evicted for a (its worker never started)
    assert_eq!(h.started(), ["a"], "loaded afresh, not woken");
}

#[test]
fn a_wake_that_fails_fails_the_request_with_the_reason() {
    let mut h = parking(100, &["a", "b"]);
    serving(&mut h, "a", 1);
    h.load_ready("b");
    h.take_calls();
    let mut lease = h.acquire("a");
    h.released("b");
    assert!(h.take_calls().contains(&Call::Wake("a".into())));
    h.report(
        "a",
        ModelReport::SleepFailed("the worker could not wake: no memory".into()),
    );
    match lease_error(&mut lease) {
        SupervisorError::Unavailable(m) => assert!(m.contains("no memory"), "{m}"),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    assert_eq!(h.state_of("a"), ModelState::Failed);
    assert_eq!(h.take_calls(), [Call::Unload("a".into())]);
}

#[test]
fn unloading_a_parked_model_stops_its_worker() {
    let mut h = parking(100, &["a", "b"]);
    serving(&mut h, "a", 1);
    h.load("b").unwrap();
    h.take_calls();
    let (tx, mut rx) = oneshot::channel();
    h.state.unload("a", tx, h.now);
    assert_eq!(h.take_calls(), [Call::Unload("a".into())]);
    assert!(rx.try_recv().is_err(), "answered once released");
    h.released("a");
    let view = rx.try_recv().expect("answered").expect("unloaded");
    assert_eq!(view.state, ModelState::Unloaded);
    assert_eq!(view.worker_pid, None);
}

#[test]
fn a_parked_model_expires_after_its_idle_ttl() {
    let settings = SupervisorSettings {
        park_bytes: 100,
        idle_ttl: Some(Duration::from_secs(10)),
        ..settings(1)
    };
    let mut h = Harness::new(settings, &[("a", 100), ("b", 100)]);
    serving(&mut h, "a", 1);
    h.load("b").unwrap();
    h.take_calls();
    h.tick(10);
    h.state.expire_idle(h.now);
    assert!(h.take_calls().contains(&Call::Unload("a".into())));
}

#[test]
fn a_reload_that_lowers_the_park_budget_unloads_parked_models() {
    let mut h = parking(100, &["a", "b"]);
    serving(&mut h, "a", 1);
    h.load("b").unwrap();
    h.take_calls();
    h.state.apply_settings(settings(1), h.now);
    assert_eq!(h.take_calls(), [Call::Unload("a".into())]);
}
