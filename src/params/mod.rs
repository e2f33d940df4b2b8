//! The engine settings of one model, defined once: [`ModelParams`] (every
//! setting, resolved) and [`ModelParamsPatch`] (the same settings, each
//! optional), both generated from the one field list below.
//!
//! Every spelling derives from that list:
//! - the config file's daemon-wide keys (`Config` flattens `ModelParams`),
//!   its `[defaults]` and `[models."ID"]` tables (they flatten the patch);
//! - `llama-router serve`'s flags (the patch, flattened with clap);
//! - the worker's argv (`ModelParams`, flattened with clap; [`to_argv`]
//!   writes it back from the serde names, which are the flag names);
//! - what the engine and GPU admission read (`ModelParams` itself);
//! - llama-server's flags, preset keys and `LLAMA_ARG_*` variables
//!   ([`LLAMA_SERVER_NAMES`], read by `settings::llama_args`).
//!
//! Nothing here is secret: these structs
//! travel in the worker's argv, which `ps` shows; secrets and a model's `env`
//! travel in the environment.
//!
//! This module is a leaf: it imports nothing of the crate.

mod values;

#[cfg(test)]
mod tests;

use std::ffi::OsString;

use serde::{Deserialize, Serialize};

pub use values::{CacheType, FlashAttn, GpuLayers, SamplingSettings, value_name};

/// Smallest context per sequence the engine runs with, in tokens.
pub const MIN_CTX_SIZE: u32 = 16;

/// llama-server's spellings of one engine setting: its flags (without the
/// dashes, short ones first, as llama-server lists them) and its
/// environment variable. Generated from the field list, so that every
/// spelling of a setting comes from its one definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlamaServerName {
    /// The setting: its config key (the serde name of the field).
    pub key: &'static str,
    /// llama-server's flag names without dashes (`c`, `ctx-size`); also its preset keys.
    pub flags: &'static [&'static str],
    /// llama-server's environment variable (`LLAMA_ARG_CTX_SIZE`); also a preset key.
    pub env: &'static str,
    /// A switch: its flags take no value (`--cache-prompt`).
    pub switch: bool,
}

/// Whether a setting's type is a switch on llama-server's command line.
pub trait Switch {
    /// True for `bool`.
    const SWITCH: bool = false;
}

impl Switch for bool {
    const SWITCH: bool = true;
}
impl Switch for u32 {}
impl Switch for GpuLayers {}
impl Switch for FlashAttn {}
impl Switch for CacheType {}

/// Defines [`ModelParams`], [`ModelParamsPatch`], the patch's merges and
/// llama-server's names of each setting ([`LLAMA_SERVER_NAMES`]) from one
/// list of fields: `doc, name: type = default, "VALUE NAME", [llama-server
/// flags] "LLAMA_ARG_..."`.
macro_rules! model_params {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $ty:ty = $default:expr, $value_name:literal,
            [$($flag:literal),+] $env:literal;
    )*) => {
        /// llama-server's flag and environment names of every engine setting.
        pub const LLAMA_SERVER_NAMES: &[LlamaServerName] = &[
            $(LlamaServerName {
                key: stringify!($name),
                flags: &[$($flag),+],
                env: $env,
                switch: <$ty as Switch>::SWITCH,
            },)*
        ];

        /// How a model's engine runs: every setting, resolved (the worker's
        /// argv, the engine's configuration, what GPU admission estimates).
        #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, clap::Args)]
        #[serde(default)]
        pub struct ModelParams {
            $(
                $(#[doc = $doc])*
                #[arg(long, value_name = $value_name, action = clap::ArgAction::Set)]
                pub $name: $ty,
            )*
        }

        impl Default for ModelParams {
            fn default() -> Self {
                ModelParams { $($name: $default,)* }
            }
        }

        /// Some of the engine settings: a `[defaults]` or `[models."ID"]`
        /// table, or the `serve` flags that were given. Unset ones fall through.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, clap::Args)]
        #[serde(default)]
        pub struct ModelParamsPatch {
            $(
                $(#[doc = $doc])*
                #[arg(long, value_name = $value_name, action = clap::ArgAction::Set)]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $name: Option<$ty>,
            )*
        }

        impl ModelParamsPatch {
            /// Each setting of `self`, else of `under`.
            pub fn or(self, under: ModelParamsPatch) -> ModelParamsPatch {
                ModelParamsPatch { $($name: self.$name.or(under.$name),)* }
            }

            /// Each setting of `self`, else of `base`; not yet normalized.
            pub fn over(self, base: ModelParams) -> ModelParams {
                ModelParams { $($name: self.$name.unwrap_or(base.$name),)* }
            }
        }
    };
}

model_params! {
    /// Context of each request, in tokens (prompt + answer) [default: 4096].
    ctx_size: u32 = 4096, "TOKENS", ["c", "ctx-size"] "LLAMA_ARG_CTX_SIZE";
    /// Requests each model decodes together (continuous batching) [default: 4].
    parallel: u32 = 4, "N", ["np", "parallel"] "LLAMA_ARG_N_PARALLEL";
    /// Most tokens per decode step; long prompts go in chunks of this [default: 512].
    batch_size: u32 = 512, "TOKENS", ["b", "batch-size"] "LLAMA_ARG_BATCH";
    /// llama.cpp CPU threads per worker; 0 = one per core [default: 0].
    threads: u32 = 0, "N", ["t", "threads"] "LLAMA_ARG_THREADS";
    /// Layers offloaded to the GPU: auto (as many as fit in free VRAM), all, or a number [default: auto].
    gpu_layers: GpuLayers = GpuLayers::Auto, "N|auto|all",
        ["ngl", "gpu-layers", "n-gpu-layers"] "LLAMA_ARG_N_GPU_LAYERS";
    /// Which GPU models offload to (index among the usable ones) [default: 0].
    main_gpu: u32 = 0, "N", ["mg", "main-gpu"] "LLAMA_ARG_MAIN_GPU";
    /// Flash attention: auto (llama.cpp decides), on or off [default: auto].
    flash_attn: FlashAttn = FlashAttn::Auto, "MODE", ["fa", "flash-attn"] "LLAMA_ARG_FLASH_ATTN";
    /// KV cache type of keys [default: f16].
    cache_type_k: CacheType = CacheType::F16, "TYPE", ["ctk", "cache-type-k"] "LLAMA_ARG_CACHE_TYPE_K";
    /// KV cache type of values (quantized needs flash attention) [default: f16].
    cache_type_v: CacheType = CacheType::F16, "TYPE", ["ctv", "cache-type-v"] "LLAMA_ARG_CACHE_TYPE_V";
    /// Reuse the KV cache of an earlier request's shared prompt prefix, so
    /// that only the new tokens are evaluated (true or false) [default: true].
    cache_prompt: bool = true, "BOOL", ["cache-prompt"] "LLAMA_ARG_CACHE_PROMPT";
}

impl ModelParams {
    /// The settings the engine can run with: at least [`MIN_CTX_SIZE`]
    /// tokens of context, one sequence and one token per step. The only
    /// place these clamps are written; resolution and the engine both call it.
    pub fn normalized(self) -> ModelParams {
        ModelParams {
            ctx_size: self.ctx_size.max(MIN_CTX_SIZE),
            parallel: self.parallel.max(1),
            batch_size: self.batch_size.max(1),
            ..self
        }
    }
}

/// A struct as the flags clap parses back into it: `--name value` for each
/// serde field (its name with `-` for `_`), none for an absent (`None`) one.
///
/// Serde's names are the flag names, and every value's serde spelling is its
/// command-line spelling (`auto`, `q8_0`, numbers), so this needs no list of
/// its own; the worker's argv test checks the round trip.
pub fn to_argv(value: &impl Serialize) -> Vec<OsString> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(value) else {
        return Vec::new();
    };
    let mut argv = Vec::new();
    for (name, value) in fields {
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        argv.push(format!("--{}", name.replace('_', "-")).into());
        argv.push(text.into());
    }
    argv
}
