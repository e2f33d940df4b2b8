//! Per-model settings from the config file: `[defaults]` and `[models."ID"]`
//! tables, resolved as model table > defaults > the daemon-wide keys.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::worker::WorkerSettings;

/// The config/command-line spelling of a setting's value (`q8_0`, `auto`).
pub fn value_name(value: impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

/// Flash attention: llama.cpp decides, or forced on or off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttn {
    /// llama.cpp decides per backend.
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl FlashAttn {
    /// llama.cpp's `llama_flash_attn_type` value.
    pub fn llama_value(self) -> i32 {
        match self {
            FlashAttn::Auto => -1,
            FlashAttn::Off => 0,
            FlashAttn::On => 1,
        }
    }
}

/// Element type of the KV cache (quantized types save memory; V needs flash attention).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CacheType {
    /// 32-bit float.
    F32,
    /// 16-bit float (llama.cpp's default).
    #[default]
    F16,
    /// 8-bit blocks.
    #[value(name = "q8_0")]
    Q8_0,
    /// 5-bit blocks.
    #[value(name = "q5_1")]
    Q5_1,
    /// 5-bit blocks.
    #[value(name = "q5_0")]
    Q5_0,
    /// 4-bit blocks.
    #[value(name = "q4_1")]
    Q4_1,
    /// 4-bit blocks.
    #[value(name = "q4_0")]
    Q4_0,
}

/// Sampling defaults of a model: a request's own values win over them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingSettings {
    /// 0 = greedy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// 0 = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i32>,
    /// 1 = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// 0 = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    /// 1 = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f32>,
    /// 0 = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// 0 = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// Tokens the penalties look back over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub penalty_last_n: Option<i32>,
}

impl SamplingSettings {
    /// Each field of `self`, else of `under`.
    pub fn over(self, under: SamplingSettings) -> SamplingSettings {
        SamplingSettings {
            temperature: self.temperature.or(under.temperature),
            top_k: self.top_k.or(under.top_k),
            top_p: self.top_p.or(under.top_p),
            min_p: self.min_p.or(under.min_p),
            repeat_penalty: self.repeat_penalty.or(under.repeat_penalty),
            presence_penalty: self.presence_penalty.or(under.presence_penalty),
            frequency_penalty: self.frequency_penalty.or(under.frequency_penalty),
            penalty_last_n: self.penalty_last_n.or(under.penalty_last_n),
        }
    }
}

/// What one model's worker gets besides the daemon-wide settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerExtras {
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Sampling defaults.
    pub sampling: SamplingSettings,
    /// A chat template file used instead of the model's own.
    pub chat_template: Option<PathBuf>,
}

/// Settings a `[defaults]` or `[models."ID"]` table may set; unset keys fall through.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// Context per request, in tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx_size: Option<u32>,
    /// Requests decoded together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel: Option<u32>,
    /// llama.cpp CPU threads (0 = one per core).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Tokens per decode step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Never evicted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<bool>,
    /// Layers offloaded to the GPU (GPU builds; none = llama.cpp's default, all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_layers: Option<u32>,
    /// Flash attention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flash_attn: Option<FlashAttn>,
    /// KV cache type of keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_type_k: Option<CacheType>,
    /// KV cache type of values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_type_v: Option<CacheType>,
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

/// What a model's worker runs with, for display.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effective {
    /// Worker settings.
    pub worker: Option<WorkerSettings>,
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

    /// `id`'s worker settings: its table, else the defaults, else `base` (the daemon-wide keys).
    pub fn worker(&self, id: &str, base: WorkerSettings) -> WorkerSettings {
        WorkerSettings {
            ctx_size: self
                .pick(id, |s| s.ctx_size)
                .unwrap_or(base.ctx_size)
                .max(16),
            parallel: self
                .pick(id, |s| s.parallel)
                .unwrap_or(base.parallel)
                .max(1),
            threads: self.pick(id, |s| s.threads).unwrap_or(base.threads),
            batch_size: self
                .pick(id, |s| s.batch_size)
                .unwrap_or(base.batch_size)
                .max(1),
            gpu_layers: self.pick(id, |s| s.gpu_layers).or(base.gpu_layers),
            flash_attn: self.pick(id, |s| s.flash_attn).unwrap_or(base.flash_attn),
            cache_type_k: self
                .pick(id, |s| s.cache_type_k)
                .unwrap_or(base.cache_type_k),
            cache_type_v: self
                .pick(id, |s| s.cache_type_v)
                .unwrap_or(base.cache_type_v),
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
            worker: Some(self.worker(id, base)),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn base() -> WorkerSettings {
        WorkerSettings {
            parallel: 4,
            ctx_size: 4096,
            batch_size: 512,
            threads: 0,
            queue: 64,
            stop_timeout: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(300),
            gpu_layers: None,
            flash_attn: FlashAttn::Auto,
            cache_type_k: CacheType::F16,
            cache_type_v: CacheType::F16,
        }
    }

    fn table(ctx: Option<u32>, aliases: &[&str]) -> ModelSettings {
        ModelSettings {
            ctx_size: ctx,
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            ..ModelSettings::default()
        }
    }

    #[test]
    fn the_model_table_beats_the_defaults_which_beat_the_daemon_keys() {
        let defaults = ModelSettings {
            ctx_size: Some(2048),
            parallel: Some(2),
            env: [
                ("A".to_owned(), "d".to_owned()),
                ("B".to_owned(), "d".to_owned()),
            ]
            .into(),
            ..ModelSettings::default()
        };
        let mut own = table(Some(8192), &[]);
        own.env.insert("B".into(), "own".into());
        let p = ModelProfiles::new(defaults, [("big".to_owned(), own)].into()).unwrap();
        let big = p.worker("big", base());
        assert_eq!((big.ctx_size, big.parallel, big.batch_size), (8192, 2, 512));
        let other = p.worker("other", base());
        assert_eq!((other.ctx_size, other.parallel), (2048, 2));
        assert_eq!(
            p.extras("big").env,
            [
                ("A".to_owned(), "d".to_owned()),
                ("B".to_owned(), "own".to_owned())
            ]
            .into()
        );
        assert_eq!(
            p.extras("other").env.get("B").map(String::as_str),
            Some("d")
        );
        assert_eq!(ModelProfiles::default().worker("x", base()), base());
    }

    #[test]
    fn sampling_ttl_and_mlock_fall_through_field_by_field() {
        let defaults = ModelSettings {
            sampling: SamplingSettings {
                temperature: Some(0.2),
                top_k: Some(10),
                ..SamplingSettings::default()
            },
            idle_ttl: Some(60),
            ..ModelSettings::default()
        };
        let own = ModelSettings {
            sampling: SamplingSettings {
                temperature: Some(0.0),
                ..SamplingSettings::default()
            },
            idle_ttl: Some(0),
            mlock: Some(true),
            chat_template: Some("/t.jinja".into()),
            ..ModelSettings::default()
        };
        let p = ModelProfiles::new(defaults, [("m".to_owned(), own)].into()).unwrap();
        let s = p.extras("m").sampling;
        assert_eq!(
            (s.temperature, s.top_k, s.top_p),
            (Some(0.0), Some(10), None)
        );
        assert_eq!(p.extras("m").chat_template, Some(PathBuf::from("/t.jinja")));
        assert_eq!(p.idle_ttl("m", Some(Duration::from_secs(5))), None);
        assert_eq!(p.idle_ttl("x", None), Some(Duration::from_secs(60)));
        assert!(p.mlock("m", false) && !p.mlock("x", false));
    }

    #[test]
    fn aliases_resolve_and_collisions_are_refused() {
        let p = ModelProfiles::new(
            ModelSettings::default(),
            [(
                "gemma-3-270m-q4_k_m".to_owned(),
                table(None, &["gemma", "small"]),
            )]
            .into(),
        )
        .unwrap();
        assert_eq!(p.resolve_alias("small"), Some("gemma-3-270m-q4_k_m"));
        assert_eq!(p.resolve_alias("gemma-3-270m-q4_k_m"), None);

        let twice = ModelProfiles::new(
            ModelSettings::default(),
            [
                ("a".to_owned(), table(None, &["x"])),
                ("b".to_owned(), table(None, &["x"])),
            ]
            .into(),
        )
        .unwrap_err();
        assert_eq!(
            twice.to_string(),
            r#"models.b.aliases: "x" is already an alias of a"#
        );
        let is_a_model = ModelProfiles::new(
            ModelSettings::default(),
            [
                ("a".to_owned(), table(None, &["b"])),
                ("b".to_owned(), table(None, &[])),
            ]
            .into(),
        )
        .unwrap_err();
        assert!(
            is_a_model
                .to_string()
                .contains("is the id of another model"),
            "{is_a_model}"
        );
        let bad_env = ModelProfiles::new(
            ModelSettings {
                env: [("A=B".to_owned(), "x".to_owned())].into(),
                ..ModelSettings::default()
            },
            BTreeMap::new(),
        )
        .unwrap_err();
        assert!(matches!(bad_env, SettingsError::EnvName { .. }));
    }

    #[test]
    fn more_startup_loads_than_models_max_is_an_error_naming_them() {
        let eager = ModelSettings {
            load_on_startup: Some(true),
            ..ModelSettings::default()
        };
        let p = ModelProfiles::new(
            ModelSettings::default(),
            [
                ("a".to_owned(), eager.clone()),
                ("b".to_owned(), eager),
                ("c".to_owned(), table(None, &[])),
            ]
            .into(),
        )
        .unwrap();
        assert_eq!(p.startup(), ["a", "b"]);
        assert!(p.check_startup(2).is_ok() && p.check_startup(0).is_ok());
        assert_eq!(
            p.check_startup(1).unwrap_err().to_string(),
            "2 models have load_on_startup (a, b) but models_max is 1"
        );
    }
}
