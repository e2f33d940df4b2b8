//! A model's one-screen summary, derived from its metadata and tensors.

use std::collections::HashMap;

use serde::Serialize;

use super::ggml_type::GgmlType;
use super::split::GgufModel;
use super::value::Value;

/// Longest text field a summary keeps, in bytes: names and labels are a few
/// dozen bytes in real files, and the catalog serves every model's summary in
/// one `ListModels` answer, which a file must not be able to inflate.
pub const MAX_SUMMARY_TEXT_BYTES: usize = 256;

/// What a user wants to know about a model before loading it.
///
/// Text fields are cut to [`MAX_SUMMARY_TEXT_BYTES`] (with a trailing `...`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSummary {
    /// `general.architecture` (`llama`, `gemma3`, ...).
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// `general.size_label` (`270M`, `8x7B`, ...).
    pub size_label: Option<String>,
    /// Sum of every tensor's element count.
    pub parameter_count: u64,
    /// `general.file_type` as llama.cpp names it (`Q4_K_M`).
    pub file_type: Option<String>,
    /// The ggml type holding the most tensor bytes.
    pub dominant_type: Option<String>,
    /// Training context length.
    pub context_length: Option<u64>,
    /// Embedding width.
    pub embedding_length: Option<u64>,
    /// Number of transformer blocks.
    pub block_count: Option<u64>,
    /// Attention heads (the largest, when per-layer).
    pub head_count: Option<u64>,
    /// Key/value heads (the largest, when per-layer).
    pub head_count_kv: Option<u64>,
    /// `tokenizer.ggml.model` (`llama`, `gpt2`, ...).
    pub tokenizer_model: Option<String>,
    /// Number of tokens in the vocabulary.
    pub vocab_size: Option<u64>,
    /// Whether the file carries `tokenizer.chat_template`.
    pub has_chat_template: bool,
    /// Number of tensors.
    pub tensor_count: u64,
    /// Number of files.
    pub shard_count: u64,
    /// Size of all files together.
    pub total_bytes: u64,
}

impl ModelSummary {
    /// Summarizes `model`.
    pub fn of(model: &GgufModel) -> Self {
        let md = model.metadata();
        let text = |key: &str| md.get_str(key).map(bounded);
        let architecture = text("general.architecture");
        let arch_u64 = |suffix: &str| {
            // The file's own spelling: the bounded copy may be cut.
            let arch = md.get_str("general.architecture")?;
            per_layer_max(md.get(&format!("{arch}.{suffix}"))?)
        };
        let mut bytes_by_type: HashMap<GgmlType, u64> = HashMap::new();
        let mut parameter_count = 0u64;
        let mut tensor_count = 0u64;
        for (_, t) in model.tensors() {
            let entry = bytes_by_type.entry(t.ggml_type).or_default();
            *entry = entry.saturating_add(t.size);
            parameter_count = parameter_count.saturating_add(t.n_elements);
            tensor_count = tensor_count.saturating_add(1);
        }
        let dominant_type = bytes_by_type
            .iter()
            .max_by_key(|&(ty, bytes)| (*bytes, std::cmp::Reverse(*ty)))
            .map(|(ty, _)| ty.name().to_owned());
        let vocab_size = md
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .map(|a| a.len() as u64)
            .or_else(|| arch_u64("vocab_size"));
        ModelSummary {
            name: text("general.name"),
            size_label: text("general.size_label"),
            parameter_count,
            file_type: md.get_u64("general.file_type").map(file_type_name),
            dominant_type,
            context_length: arch_u64("context_length"),
            embedding_length: arch_u64("embedding_length"),
            block_count: arch_u64("block_count"),
            head_count: arch_u64("attention.head_count"),
            head_count_kv: arch_u64("attention.head_count_kv"),
            tokenizer_model: text("tokenizer.ggml.model"),
            vocab_size,
            has_chat_template: md.get("tokenizer.chat_template").is_some(),
            tensor_count,
            shard_count: model.shard_count() as u64,
            total_bytes: model.total_bytes(),
            architecture,
        }
    }
}

/// `text` cut on a character boundary to at most [`MAX_SUMMARY_TEXT_BYTES`].
fn bounded(text: &str) -> String {
    if text.len() <= MAX_SUMMARY_TEXT_BYTES {
        return text.to_owned();
    }
    const MARK: &str = "...";
    let mut cut = MAX_SUMMARY_TEXT_BYTES.saturating_sub(MARK.len());
    while !text.is_char_boundary(cut) {
        cut = cut.saturating_sub(1);
    }
    format!("{}{MARK}", text.get(..cut).unwrap_or_default())
}

/// A count that is a scalar, or an array with one value per layer.
fn per_layer_max(value: &Value) -> Option<u64> {
    match value {
        Value::Array(a) => a.max_u64(),
        v => v.as_u64(),
    }
}

/// llama.cpp's name for a `general.file_type` value (`enum llama_ftype`).
pub fn file_type_name(id: u64) -> String {
    let name = match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        39 => "NVFP4",
        40 => "Q1_0",
        1024 => "GUESSED",
        other => return format!("unknown ({other})"),
    };
    name.to_owned()
}
