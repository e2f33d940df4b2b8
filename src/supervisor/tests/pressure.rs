//! GPU memory pressure: which idle models make room, and the dry run's facts.

use super::*;
use crate::gpu::placement::GpuUse;

const DEVICE: &str = "vulkan:0 (fake)";

fn on_gpu(bytes: u64) -> ModelReport<FakeWorker> {
    ModelReport::Offloaded(GpuUse {
        device: DEVICE.into(),
        layers: 19,
        max_layers: 19,
        estimate_bytes: bytes,
        measured_bytes: Some(bytes),
        reserved_bytes: bytes,
        upload_seconds: 1.0,
        upload_bytes_per_second: 1,
    })
}

/// `id` ready with its worker running on the device, holding `bytes`, idle.
fn running_on_gpu(h: &mut Harness, id: &str, bytes: u64) {
    h.load_ready(id);
    h.lease(id);
    h.report(id, on_gpu(bytes));
    h.release(id);
    h.tick(1);
}

fn needs_room(h: &mut Harness, id: &str, need: u64, free: u64) {
    h.report(
        id,
        ModelReport::NeedsRoom {
            device: DEVICE.into(),
            need,
            free,
        },
    );
}

#[test]
fn an_offload_that_does_not_fit_evicts_the_least_recently_used_idle_models_on_its_device() {
    let mut h = Harness::with(0, &["old", "recent", "new"]);
    running_on_gpu(&mut h, "old", 300);
    running_on_gpu(&mut h, "recent", 300);
    let _lease = h.acquire("new");
    h.resident("new");
    h.take_calls();
    needs_room(&mut h, "new", 400, 200);
    let calls = h.take_calls();
    assert_eq!(
        calls,
        [Call::Unload("old".into()), Call::Room("new".into(), true)],
        "only the least recently used one, which is enough"
    );
    let causes = h.causes();
    assert!(
        causes
            .iter()
            .any(|(id, c)| id == "old" && c.to_string().contains("to make GPU memory for new")),
        "{causes:?}"
    );
    assert_eq!(
        h.state.view("old").unwrap().gpu.map(|g| g.reserved_bytes),
        Some(300)
    );
    h.released("old");
    assert!(
        h.state.view("old").unwrap().gpu.is_none(),
        "released: it holds nothing"
    );
}

#[test]
fn busy_and_pinned_models_are_never_evicted_and_nobody_goes_for_too_little() {
    let mut h = Harness::with(0, &["busy", "pinned", "idle", "new"]);
    running_on_gpu(&mut h, "busy", 500);
    running_on_gpu(&mut h, "pinned", 500);
    running_on_gpu(&mut h, "idle", 100);
    let _held = h.lease("busy");
    h.state.pin("pinned", true).unwrap();
    let _lease = h.acquire("new");
    h.resident("new");
    h.take_calls();
    // Evicting the one idle model would not make room: nothing is evicted.
    needs_room(&mut h, "new", 800, 100);
    assert_eq!(h.take_calls(), [Call::Room("new".into(), false)]);
    assert_eq!(h.state_of("idle"), ModelState::Ready);
    // Enough with it: it goes, the others stay.
    needs_room(&mut h, "new", 150, 100);
    assert_eq!(
        h.take_calls(),
        [Call::Unload("idle".into()), Call::Room("new".into(), true)]
    );
}

#[test]
fn the_preview_names_models_max_victims_and_gpu_holders_and_changes_nothing() {
    let mut h = Harness::with(2, &["a", "b", "c"]);
    running_on_gpu(&mut h, "a", 300);
    h.load_ready("b");
    h.tick(1);
    h.take_calls();
    let preview = h.state.preview("c").unwrap();
    assert_eq!(preview.evicts, ["a"], "the least recently used of the two");
    let holders: Vec<_> = preview
        .gpu_holders
        .iter()
        .map(|(device, holder)| {
            (
                device.as_str(),
                holder.id.as_str(),
                holder.bytes,
                holder.evictable,
            )
        })
        .collect();
    assert_eq!(holders, [(DEVICE, "a", 300, true)]);
    assert!(h.take_calls().is_empty(), "a dry run does nothing");
    assert_eq!(h.state_of("a"), ModelState::Ready);
    assert!(
        h.state.preview("a").unwrap().evicts.is_empty(),
        "a is loaded already"
    );
}

#[test]
fn memory_on_its_way_back_is_waited_for_not_refused_and_nobody_else_goes() {
    let mut h = Harness::with(0, &["leaving", "idle", "new"]);
    running_on_gpu(&mut h, "leaving", 500);
    running_on_gpu(&mut h, "idle", 500);
    h.state
        .begin_unload("leaving", UnloadCause::Requested, h.now);
    let _lease = h.acquire("new");
    h.resident("new");
    h.take_calls();
    needs_room(&mut h, "new", 600, 200);
    assert_eq!(
        h.take_calls(),
        [Call::Room("new".into(), true)],
        "the unloading model's memory suffices: wait for it, evict no one"
    );
    assert_eq!(h.state_of("idle"), ModelState::Ready);
}

#[test]
fn a_parked_model_gives_its_gpu_memory_back_when_a_load_needs_it() {
    let settings = SupervisorSettings {
        park_bytes: 1_000,
        ..settings(1)
    };
    let mut h = Harness::new(settings, &[("old", 100), ("new", 100)]);
    running_on_gpu(&mut h, "old", 300);
    let _lease = h.acquire("new");
    assert_eq!(
        h.state_of("old"),
        ModelState::Parked,
        "it keeps its GPU memory"
    );
    h.resident("new");
    h.take_calls();
    needs_room(&mut h, "new", 400, 200);
    assert_eq!(
        h.take_calls(),
        [Call::Unload("old".into()), Call::Room("new".into(), true)]
    );
}
