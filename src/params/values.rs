//! The values engine settings are made of: flash attention, KV cache types,
//! GPU layers and sampling defaults, each with its config spelling, its
//! command-line spelling and (where llama.cpp or the public API encode it
//! differently) that encoding, in one place.

use serde::{Deserialize, Serialize};

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

impl std::fmt::Display for FlashAttn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&value_name(*self))
    }
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

impl std::fmt::Display for CacheType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&value_name(*self))
    }
}

/// How many layers a model offloads to the GPU: `auto` (as many as fit in
/// free VRAM), `all`, or a number (refused when it does not fit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuLayers {
    /// As many as fit.
    #[default]
    Auto,
    /// Every layer.
    All,
    /// This many.
    Count(u32),
}

/// llama.cpp's `n_gpu_layers` for "every layer" (what its own tools pass).
const LLAMA_ALL_LAYERS: u32 = 999;
/// The public API's `EffectiveSettings.gpu_layers` for `auto` (models.proto).
const PROTO_AUTO: i32 = -1;
/// The public API's `EffectiveSettings.gpu_layers` for `all` (models.proto).
const PROTO_ALL: i32 = -2;

impl GpuLayers {
    /// What placement tries first: every layer for `auto` (fewer only when
    /// that does not fit even after evicting idle models), else what was asked.
    pub fn whole(self) -> Self {
        match self {
            GpuLayers::Auto => GpuLayers::All,
            asked => asked,
        }
    }

    /// llama.cpp's `n_gpu_layers`; None: leave llama.cpp's default (only
    /// `auto` on a machine where admission found no GPU to resolve it for).
    pub fn llama_value(self) -> Option<u32> {
        match self {
            GpuLayers::Auto => None,
            GpuLayers::All => Some(LLAMA_ALL_LAYERS),
            GpuLayers::Count(n) => Some(n),
        }
    }

    /// The public API's encoding: -1 auto, -2 all, else the count.
    pub fn to_proto(self) -> i32 {
        match self {
            GpuLayers::Auto => PROTO_AUTO,
            GpuLayers::All => PROTO_ALL,
            GpuLayers::Count(n) => i32::try_from(n).unwrap_or(i32::MAX),
        }
    }

    /// Reads the public API's encoding back (other negative numbers: auto).
    pub fn from_proto(value: i32) -> Self {
        match value {
            PROTO_ALL => GpuLayers::All,
            n => u32::try_from(n).map_or(GpuLayers::Auto, GpuLayers::Count),
        }
    }
}

impl std::str::FromStr for GpuLayers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(GpuLayers::Auto),
            "all" => Ok(GpuLayers::All),
            n => n
                .parse()
                .map(GpuLayers::Count)
                .map_err(|_| format!("gpu layers must be auto, all or a number, not {n:?}")),
        }
    }
}

impl std::fmt::Display for GpuLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuLayers::Auto => f.write_str("auto"),
            GpuLayers::All => f.write_str("all"),
            GpuLayers::Count(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for GpuLayers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            GpuLayers::Count(n) => s.serialize_u32(*n),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for GpuLayers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(GpuLayers::Count(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Sampling defaults of a model: a request's own values win over them.
///
/// The `sampling` table of the config file, and the worker's `--temperature`,
/// `--top-k`... flags (flattened into its argv with clap, each typed, so the
/// worker parses them like any other flag; absent ones keep the built-ins).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingSettings {
    /// 0 = greedy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// 0 = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, allow_negative_numbers = true)]
    pub top_k: Option<i32>,
    /// 1 = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// 0 = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, allow_negative_numbers = true)]
    pub min_p: Option<f32>,
    /// 1 = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, allow_negative_numbers = true)]
    pub repeat_penalty: Option<f32>,
    /// 0 = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, allow_negative_numbers = true)]
    pub presence_penalty: Option<f32>,
    /// 0 = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, allow_negative_numbers = true)]
    pub frequency_penalty: Option<f32>,
    /// Tokens the penalties look back over.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, allow_negative_numbers = true)]
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
