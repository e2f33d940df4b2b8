//! Per-model settings from the config file: `[defaults]` and `[models."ID"]`
//! tables, resolved as model table > defaults > the daemon-wide keys (which
//! figment already resolved as flags > environment > file > built-ins).
//! [`ModelProfiles::params`] is the one place a model's engine settings are
//! resolved. llama-server's names for these settings ([`llama_args`]) and
//! its preset files ([`preset`]) map onto the same tables.

pub mod llama_args;
pub mod preset;
#[cfg(test)]
mod tests;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::params::{ModelParams, ModelParamsPatch, SamplingSettings};

pub use worker::WorkerSettings;

/// Settings a `[defaults]` or `[models."ID"]` table may set; unset keys fall through.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// Engine settings (`ctx_size`, `gpu_layers`, ...: see `ModelParams`).
    #[serde(flatten)]
    pub params: ModelParamsPatch,
    /// Never evicted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<bool>,
    /// Lock this model's pages in RAM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlock: Option<bool>,
    /// Seconds idle before unloading (0 = never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_ttl: Option<u64>,
    /// Sampling defaults for requests that do not set them.
    pub sampling: SamplingSettings,
    /// A Jinja chat template file to use instead of the model's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<PathBuf>,
    /// Load into RAM when the daemon starts (in the background, after READY).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_on_startup: Option<bool>,
    /// Seconds this model's stopping worker may finish in-flight requests
    /// before SIGKILL (over the daemon-wide `stop_timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u64>,
    /// Environment of this model's worker (and of nothing else).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Other names requests may use for this model.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A problem with the per-model tables.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// Two models claim one alias, or an alias is another model's id.
    #[error("models.{model}.aliases: {alias:?} {problem}")]
    Alias {
        /// The table that declares it.
        model: String,
        /// The alias.
        alias: String,
        /// What is wrong.
        problem: String,
    },
    /// More models load at start-up than `models_max` allows.
    #[error("{count} models have load_on_startup ({names}) but models_max is {max}")]
    TooManyAtStartup {
        /// How many.
        count: usize,
        /// Which.
        names: String,
        /// `models_max`.
        max: u32,
    },
    /// An environment variable name that cannot be one.
    #[error("{table}.env: {name:?} is not a valid environment variable name")]
    EnvName {
        /// `defaults` or `models.ID`.
        table: String,
        /// The name.
        name: String,
    },
}

/// What one model's worker gets besides its engine settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerExtras {
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Sampling defaults.
    pub sampling: SamplingSettings,
    /// A chat template file used instead of the model's own.
    pub chat_template: Option<PathBuf>,
}

/// What a model's worker runs with, for display.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effective {
    /// Engine settings.
    pub params: Option<ModelParams>,
    /// Locked in RAM.
    pub mlock: bool,
    /// Idle TTL.
    pub idle_ttl: Option<Duration>,
    /// Environment, sampling defaults, template.
    pub extras: WorkerExtras,
}

/// Every model's settings, resolved on demand.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelProfiles {
    defaults: ModelSettings,
    models: BTreeMap<String, ModelSettings>,
    /// alias -> model id
    aliases: BTreeMap<String, String>,
}

impl ModelProfiles {
    /// Checks the tables (aliases unique and not model ids, env names valid) and indexes them.
    pub fn new(
        defaults: ModelSettings,
        models: BTreeMap<String, ModelSettings>,
    ) -> Result<Self, SettingsError> {
        let mut aliases = BTreeMap::new();
        check_env("defaults", &defaults.env)?;
        for (id, settings) in &models {
            check_env(&format!("models.{id}"), &settings.env)?;
            for alias in &settings.aliases {
                let problem = if models.contains_key(alias) {
                    Some("is the id of another model".to_owned())
                } else if alias.is_empty() || alias == id {
                    Some("must be a non-empty name other than the model's own".to_owned())
                } else {
                    aliases
                        .get(alias)
                        .map(|other| format!("is already an alias of {other}"))
                };
                if let Some(problem) = problem {
                    return Err(SettingsError::Alias {
                        model: id.clone(),
                        alias: alias.clone(),
                        problem,
                    });
                }
                aliases.insert(alias.clone(), id.clone());
            }
        }
        Ok(ModelProfiles {
            defaults,
            models,
            aliases,
        })
    }

    /// The model an alias names, if it is one.
    pub fn resolve_alias(&self, name: &str) -> Option<&str> {
        self.aliases.get(name).map(String::as_str)
    }

    /// Every alias with its model.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &str)> {
        self.aliases.iter().map(|(a, m)| (a.as_str(), m.as_str()))
    }

    /// An alias that is also the id of a model in the directory: `ids` are the catalog's.
    pub fn alias_shadowing<'a>(
        &self,
        mut ids: impl Iterator<Item = &'a str>,
    ) -> Option<SettingsError> {
        ids.find_map(|id| {
            self.aliases.get(id).map(|model| SettingsError::Alias {
                model: model.clone(),
                alias: id.to_owned(),
                problem: "is the id of a model in the models directory".to_owned(),
            })
        })
    }

    /// Aliases of `id`.
    pub fn aliases_of(&self, id: &str) -> Vec<String> {
        self.models
            .get(id)
            .map(|m| m.aliases.clone())
            .unwrap_or_default()
    }

    /// The table of `id` over the defaults.
    fn pick<T: Clone>(&self, id: &str, key: impl Fn(&ModelSettings) -> Option<T>) -> Option<T> {
        self.models
            .get(id)
            .and_then(&key)
            .or_else(|| key(&self.defaults))
    }

    /// `id`'s engine settings: each from its table, else the defaults, else
    /// `base` (the daemon-wide keys); normalized.
    pub fn params(&self, id: &str, base: ModelParams) -> ModelParams {
        let own = self.models.get(id).map(|m| m.params).unwrap_or_default();
        own.or(self.defaults.params).over(base).normalized()
    }

    /// `id`'s worker settings: `base` with [`ModelProfiles::params`] for its
    /// engine and its table's (else the defaults') `stop_timeout`.
    pub fn worker(&self, id: &str, base: WorkerSettings) -> WorkerSettings {
        WorkerSettings {
            params: self.params(id, base.params),
            stop_timeout: self
                .pick(id, |s| s.stop_timeout)
                .map_or(base.stop_timeout, Duration::from_secs),
            ..base
        }
    }

    /// `id`'s idle TTL: its table, else the defaults, else `base` (`--idle-ttl`).
    pub fn idle_ttl(&self, id: &str, base: Option<Duration>) -> Option<Duration> {
        match self.pick(id, |s| s.idle_ttl) {
            Some(0) => None,
            Some(secs) => Some(Duration::from_secs(secs)),
            None => base,
        }
    }

    /// Whether `id` is locked in RAM: its table, else the defaults, else `base` (`--mlock`).
    pub fn mlock(&self, id: &str, base: bool) -> bool {
        self.pick(id, |s| s.mlock).unwrap_or(base)
    }

    /// Environment, sampling defaults and chat template of `id`'s worker.
    pub fn extras(&self, id: &str) -> WorkerExtras {
        let own = self.models.get(id);
        WorkerExtras {
            env: self.env(id),
            sampling: own
                .map_or_else(SamplingSettings::default, |m| m.sampling)
                .over(self.defaults.sampling),
            chat_template: self.pick(id, |s| s.chat_template.clone()),
        }
    }

    /// Everything `id`'s worker gets, over the daemon-wide `base`, `mlock` and `idle_ttl`.
    pub fn effective(
        &self,
        id: &str,
        base: WorkerSettings,
        mlock: bool,
        idle_ttl: Option<Duration>,
    ) -> Effective {
        Effective {
            params: Some(self.worker(id, base).params),
            mlock: self.mlock(id, mlock),
            idle_ttl: self.idle_ttl(id, idle_ttl),
            extras: self.extras(id),
        }
    }

    /// Whether `id` is pinned by the config.
    pub fn pinned(&self, id: &str) -> bool {
        self.pick(id, |s| s.pin).unwrap_or(false)
    }

    /// Models to load at start-up, in id order (`[defaults] load_on_startup` counts only
    /// for models with a table).
    pub fn startup(&self) -> Vec<String> {
        self.models
            .keys()
            .filter(|id| self.pick(id, |s| s.load_on_startup).unwrap_or(false))
            .cloned()
            .collect()
    }

    /// Refuses more start-up loads than `models_max` (0 = no limit) allows.
    pub fn check_startup(&self, models_max: u32) -> Result<(), SettingsError> {
        let startup = self.startup();
        if models_max > 0 && startup.len() > models_max as usize {
            return Err(SettingsError::TooManyAtStartup {
                count: startup.len(),
                names: startup.join(", "),
                max: models_max,
            });
        }
        Ok(())
    }

    /// Extra environment of `id`'s worker: the defaults' env, then its own over it.
    fn env(&self, id: &str) -> BTreeMap<String, String> {
        let mut env = self.defaults.env.clone();
        if let Some(m) = self.models.get(id) {
            env.extend(m.env.clone());
        }
        env
    }
}

fn check_env(table: &str, env: &BTreeMap<String, String>) -> Result<(), SettingsError> {
    match env
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        Some(name) => Err(SettingsError::EnvName {
            table: table.to_owned(),
            name: name.clone(),
        }),
        None => Ok(()),
    }
}
