//! Requests: leases, workers, crashes and the restart back-off.

use super::*;
use crate::settings::ModelSettings;

#[test]
fn a_request_makes_a_ready_model_busy_and_starts_its_worker() {
    let mut h = Harness::with(1, &["a"]);
    h.load_ready("a");
    h.take_calls();
    let mut rx = h.acquire("a");
    assert_eq!(h.take_calls(), [Call::StartWorker("a".into())]);
    assert!(rx.try_recv().is_err(), "it waits for the worker");
    h.serve("a", 42);
    assert_eq!(rx.try_recv().unwrap().unwrap(), FakeWorker(42));
    assert_eq!(h.state.view("a").unwrap().worker_pid, Some(42));
    assert_eq!(h.state.models["a"].busy, 1);
}

#[test]
fn a_running_worker_serves_the_next_request_at_once() {
    let mut h = Harness::with(1, &["a"]);
    h.load_ready("a");
    h.lease("a");
    h.take_calls();
    let mut rx = h.acquire("a");
    assert_eq!(rx.try_recv().unwrap().unwrap(), FakeWorker(7));
    assert!(h.take_calls().is_empty(), "no second worker");
    assert_eq!(h.state.models["a"].busy, 2);
}

#[test]
fn requests_waiting_for_a_load_hold_the_model_the_moment_it_is_ready() {
    let mut h = Harness::with(1, &["a", "b"]);
    let _lease = h.acquire("a"); // autoload starts a
    h.load("b").unwrap(); // queued behind a
    h.take_calls();
    h.resident("a");
    assert!(
        h.unloaded().is_empty(),
        "a is busy from the moment it is ready: b must not evict it"
    );
    assert_eq!(h.state.models["a"].busy, 1);
}

#[test]
fn without_autoload_a_request_for_an_unloaded_model_is_refused() {
    let settings = SupervisorSettings {
        autoload: false,
        ..settings(1)
    };
    let mut h = Harness::new(settings, &[("a", 100)]);
    let mut rx = h.acquire("a");
    assert!(
        matches!(lease_error(&mut rx), SupervisorError::FailedPrecondition(m) if m.contains("autoload"))
    );
    assert!(h.started().is_empty());
    h.load_ready("a");
    let mut rx = h.acquire("a");
    h.serve("a", 1);
    assert!(rx.try_recv().unwrap().is_ok(), "loaded first, it serves");
}

#[test]
fn a_requests_autoload_overrides_the_daemons() {
    let off = SupervisorSettings {
        autoload: false,
        ..settings(1)
    };
    let mut h = Harness::new(off, &[("a", 100)]);
    let _rx = h.acquire_with(
        "a",
        AcquireOptions {
            autoload: Some(true),
        },
    );
    assert_eq!(
        h.started(),
        ["a"],
        "autoload=true loads it although the daemon's is off"
    );

    let mut h = Harness::with(1, &["a"]);
    let mut rx = h.acquire_with(
        "a",
        AcquireOptions {
            autoload: Some(false),
        },
    );
    assert!(
        matches!(lease_error(&mut rx), SupervisorError::FailedPrecondition(m) if m.contains("autoload=false"))
    );
    assert!(h.started().is_empty(), "nothing loads for it");
    h.load_ready("a");
    h.take_calls();
    let mut rx = h.acquire_with(
        "a",
        AcquireOptions {
            autoload: Some(false),
        },
    );
    assert_eq!(h.take_calls(), [Call::StartWorker("a".into())]);
    h.serve("a", 3);
    assert!(rx.try_recv().unwrap().is_ok(), "a loaded model serves it");
}

#[test]
fn requests_name_models_by_id_or_alias() {
    let table = ModelSettings {
        aliases: vec!["fast".into()],
        ..ModelSettings::default()
    };
    let h = Harness::new(
        with_table(1, ModelSettings::default(), table),
        &[("a", 100)],
    );
    assert_eq!(h.state.resolve("fast"), "a");
    assert_eq!(h.state.resolve("a"), "a");
    assert_eq!(h.state.view("a").unwrap().aliases, ["fast"]);
    assert!(matches!(
        h.state.view("nope"),
        Err(SupervisorError::NotFound(_))
    ));
}

#[test]
fn a_crash_fails_the_model_and_everyone_waiting_on_its_worker() {
    let mut h = Harness::with(1, &["a"]);
    h.load_ready("a");
    let mut rx = h.acquire("a");
    h.take_calls();
    h.report("a", ModelReport::WorkerFailed(killed(libc::SIGSEGV)));
    let e = lease_error(&mut rx);
    assert!(
        matches!(&e, SupervisorError::Unavailable(m) if m.contains("worker killed by SIGSEGV")),
        "{e}"
    );
    let a = h.state.view("a").unwrap();
    assert_eq!(a.state, ModelState::Failed);
    assert_eq!(
        a.failure_reason.as_deref(),
        Some("worker killed by SIGSEGV")
    );
    assert_eq!(h.unloaded(), ["a"], "its resident copy is released");
    assert_eq!(h.state.models["a"].busy, 0, "the request never held it");
}

/// Crashes `a`'s worker once it was asked to start, then lets the runtime release it.
fn crash_once(h: &mut Harness) -> LeaseRx {
    let rx = h.acquire("a");
    h.resident("a");
    h.report("a", ModelReport::WorkerFailed(exited(1)));
    h.released("a");
    rx
}

#[test]
fn the_first_crash_restarts_at_once_and_the_next_ones_back_off() {
    let mut h = Harness::with(1, &["a"]);
    let mut first = crash_once(&mut h);
    assert!(!lease_error(&mut first).to_string().contains("wait"));
    h.take_calls();
    let mut second = crash_once(&mut h);
    assert_eq!(h.started(), ["a"], "the first crash restarts at once");
    let e = lease_error(&mut second).to_string();
    assert!(e.contains("automatic restarts wait 1 s"), "{e}");
    let mut refused = h.acquire("a");
    let e = lease_error(&mut refused).to_string();
    assert!(e.contains("crashed 2 times in a row"), "{e}");
    assert!(h.started().is_empty(), "no restart during the back-off");
    h.tick(1);
    let _third = h.acquire("a");
    assert_eq!(h.started(), ["a"], "the back-off is over");
}

#[test]
fn a_worker_that_served_long_enough_starts_the_crash_count_afresh() {
    let mut h = Harness::with(1, &["a"]);
    crash_once(&mut h);
    let _rx = h.acquire("a");
    h.resident("a");
    h.serve("a", 3);
    h.tick(301);
    h.report("a", ModelReport::WorkerFailed(killed(libc::SIGKILL)));
    assert_eq!(h.state.models["a"].crashes.in_a_row, 1);
    h.released("a");
    h.take_calls();
    let _rx = h.acquire("a");
    assert_eq!(h.started(), ["a"], "no back-off after a stable run");
}

#[test]
fn a_worker_refused_for_lack_of_vram_is_not_a_crash() {
    let mut h = Harness::with(1, &["a"]);
    for _ in 0..2 {
        let mut rx = h.acquire("a");
        h.resident("a");
        h.report(
            "a",
            ModelReport::WorkerRefused("needs 9 GiB, 2 GiB free".into()),
        );
        assert!(
            matches!(lease_error(&mut rx), SupervisorError::ResourceExhausted(m) if m.contains("9 GiB"))
        );
        h.released("a");
    }
    assert_eq!(h.state.models["a"].crashes.in_a_row, 0);
    h.take_calls();
    let _rx = h.acquire("a");
    assert_eq!(h.started(), ["a"], "the next request tries again at once");
}

#[test]
fn a_worker_stopped_on_purpose_is_not_a_crash() {
    let mut h = Harness::with(1, &["a"]);
    h.load_ready("a");
    h.lease("a");
    let stopped = WorkerEnded::from(WorkerExit::Stopped);
    h.report("a", ModelReport::WorkerFailed(stopped));
    assert_eq!(h.state_of("a"), ModelState::Ready);
    assert_eq!(h.state.models["a"].crashes.in_a_row, 0);
}

#[test]
fn an_unload_cancels_requests_waiting_for_the_worker() {
    let mut h = Harness::with(1, &["a"]);
    h.load_ready("a");
    let mut rx = h.acquire("a");
    let (reply, _answer) = oneshot::channel();
    h.state.unload("a", reply, h.now);
    let e = lease_error(&mut rx);
    assert!(
        matches!(&e, SupervisorError::Unavailable(m) if m.contains("cancelled: unload requested")),
        "{e}"
    );
    assert_eq!(h.state.models["a"].busy, 0);
}
