//! Placement under memory pressure: what a model's worker holds on its
//! device, which idle models to evict so that another fits, and the plan a
//! dry run answers with. Pure rules over numbers; the supervisor acts on them.

use serde::Serialize;

/// What one model's worker holds on a device, as the daemon shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuUse {
    /// `vulkan:0 (llvmpipe ...)`.
    pub device: String,
    /// Layers offloaded (as llama.cpp reported, else as asked).
    pub layers: u32,
    /// The most layers the model has (every block plus the output layer).
    pub max_layers: u32,
    /// The estimate from the GGUF header, in bytes.
    pub estimate_bytes: u64,
    /// What llama.cpp reported allocating on the device (model, KV and
    /// compute buffers); `None` until the worker answered.
    pub measured_bytes: Option<u64>,
    /// What the ledger holds for it: the measured bytes once known.
    pub reserved_bytes: u64,
    /// From the worker's start to its answering, in seconds.
    pub upload_seconds: f64,
    /// Weights uploaded per second over that time.
    pub upload_bytes_per_second: u64,
}

/// A model that holds memory on the device, as eviction sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder<T> {
    /// Model id.
    pub id: String,
    /// Bytes it holds.
    pub bytes: u64,
    /// Idle, not pinned and not loading: eviction may take it.
    pub evictable: bool,
    /// Being unloaded already: its memory is on its way back.
    pub releasing: bool,
    /// When it was last used (older goes first).
    pub last_used: Option<T>,
}

/// The least recently used idle holders whose memory, with `free` and what
/// holders being unloaded already give back, covers `need`: empty when that
/// suffices, `None` when even evicting every idle holder would not make room
/// (then nothing should be evicted).
pub fn victims<T: Ord + Copy>(need: u64, free: u64, holders: &[Holder<T>]) -> Option<Vec<String>> {
    let coming: u64 = holders
        .iter()
        .filter(|h| h.releasing)
        .map(|h| h.bytes)
        .sum();
    let free = free.saturating_add(coming);
    if need <= free {
        return Some(Vec::new());
    }
    let mut idle: Vec<&Holder<T>> = holders.iter().filter(|h| h.evictable).collect();
    idle.sort_by_key(|h| h.last_used);
    let mut room = free;
    let mut chosen = Vec::new();
    for h in idle {
        room = room.saturating_add(h.bytes);
        chosen.push(h.id.clone());
        if room >= need {
            return Some(chosen);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(id: &str, bytes: u64, evictable: bool, last_used: u32) -> Holder<u32> {
        Holder {
            id: id.into(),
            bytes,
            evictable,
            releasing: false,
            last_used: Some(last_used),
        }
    }

    #[test]
    fn the_least_recently_used_idle_models_go_first_and_only_as_many_as_needed() {
        let holders = [
            holder("recent", 400, true, 9),
            holder("old", 300, true, 1),
            holder("busy", 1000, false, 0),
            holder("middle", 300, true, 5),
        ];
        assert_eq!(victims(100, 200, &holders), Some(vec![]));
        assert_eq!(victims(450, 200, &holders), Some(vec!["old".to_owned()]));
        assert_eq!(
            victims(700, 200, &holders),
            Some(vec!["old".to_owned(), "middle".to_owned()])
        );
        // The busy one is never taken: without it there is not enough, so nobody goes.
        assert_eq!(victims(1300, 200, &holders), None);
        // Memory on its way back counts: nobody needs to go.
        let leaving = [Holder {
            releasing: true,
            ..holder("leaving", 500, false, 0)
        }];
        assert_eq!(victims(600, 200, &leaving), Some(vec![]));
    }
}
