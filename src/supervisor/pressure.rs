//! GPU memory pressure: a model whose offload does not fit on its device
//! asks for room, and the least recently used idle models there are evicted
//! (busy and pinned ones never); and the dry run of a load, which says what
//! loading would evict without doing it.

use std::time::Instant;

use super::clock::Moment;
use super::runtime::{ModelControl, ModelRuntime};
use super::state::SupervisorState;
use super::types::{Eviction, ModelState, ModelView, SupervisorError, UnloadCause};
use crate::gpu::placement::{Holder, victims};

/// What the supervisor can say about loading a model without doing it.
#[derive(Debug, Clone)]
pub struct LoadPreview {
    /// The model as it is now (files, settings).
    pub model: ModelView,
    /// Models `--models-max` or the host cache would evict, least recently used first.
    pub evicts: Vec<String>,
    /// Every model holding GPU memory: its device's label, and how eviction sees it.
    pub gpu_holders: Vec<(String, Holder<Instant>)>,
}

impl<R: ModelRuntime> SupervisorState<R> {
    /// Models other than `except` holding memory, with their device's label.
    fn holders(&self, except: &str) -> Vec<(String, Holder<Instant>)> {
        self.models
            .iter()
            .filter(|(id, _)| id.as_str() != except)
            .filter_map(|(id, m)| {
                let gpu = m.gpu.as_ref()?;
                let holder = Holder {
                    id: id.clone(),
                    bytes: gpu.reserved_bytes,
                    evictable: m.evictable() || m.state == ModelState::Parked,
                    releasing: m.state == ModelState::Unloading,
                    last_used: m.last_used.map(|t| t.mono),
                };
                Some((gpu.device.clone(), holder))
            })
            .collect()
    }

    /// `id`'s offload needs `need` bytes on `device`, where `free` are free:
    /// evicts the least recently used idle models there if that makes room
    /// (none if it cannot), and tells `id`'s runtime whether room is coming
    /// (evicted now, or being given back by models already unloading).
    pub(super) fn on_needs_room(
        &mut self,
        id: &str,
        device: &str,
        need: u64,
        free: u64,
        now: Moment,
    ) {
        let on_device: Vec<Holder<Instant>> = self
            .holders(id)
            .into_iter()
            .filter(|(d, _)| d == device)
            .map(|(_, h)| h)
            .collect();
        let chosen = victims(need, free, &on_device);
        let coming = chosen.is_some();
        let chosen = chosen.unwrap_or_default();
        for victim in &chosen {
            tracing::info!(
                model = %victim,
                for_model = %id,
                device = %device,
                "evicting {victim} from {device}: {id} needs {} there, {} is free",
                crate::util::human_bytes(need),
                crate::util::human_bytes(free)
            );
            let cause = UnloadCause::Evicted(Eviction::GpuMemory {
                model: id.to_owned(),
                device: device.to_owned(),
            });
            self.begin_unload(victim, cause, now);
        }
        if let Some(running) = self.models.get_mut(id).and_then(|m| m.running.as_mut()) {
            running.room(coming);
        }
    }

    /// What loading `id` would evict under `--models-max` and the host
    /// cache, and who holds GPU memory: a dry run's facts.
    pub(super) fn preview(&self, id: &str) -> Result<LoadPreview, SupervisorError> {
        let model = self.record(id)?;
        let mut evicts = Vec::new();
        if !matches!(model.state, ModelState::Ready | ModelState::Loading) {
            let max = self.settings.models_max as usize;
            let limit = self.settings.host_cache_bytes;
            let mut count = self.models.values().filter(|m| m.state.is_active()).count();
            let mut cache = self.cache_used();
            let mut idle: Vec<(&String, &super::record::ModelRecord<R>)> = self
                .models
                .iter()
                .filter(|(other, m)| m.evictable() && other.as_str() != id)
                .collect();
            idle.sort_by_key(|(_, m)| m.last_used.map(|t| t.mono));
            let mut idle = idle.into_iter();
            while (max > 0 && count >= max)
                || (limit > 0 && cache.saturating_add(model.size()) > limit)
            {
                let Some((victim, m)) = idle.next() else {
                    break; // the load would wait for a busy model instead
                };
                evicts.push(victim.clone());
                count = count.saturating_sub(1);
                cache = cache.saturating_sub(m.host_bytes());
            }
        }
        Ok(LoadPreview {
            model: model.view(),
            evicts,
            gpu_holders: self.holders(id),
        })
    }
}
