//! `llama-router inspect PATH [--json]`: what a GGUF file holds, without loading it.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Map, Value as Json, json};

use crate::gguf::{GgufError, GgufModel, ModelSummary, value_to_json};
use crate::util::human_bytes;

/// Arguments of `inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A `.gguf` file, or any shard of a split set.
    pub path: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Reads the model's headers (never its weights) and renders the report.
pub fn render(args: &InspectArgs) -> Result<String, GgufError> {
    let model = GgufModel::open(&args.path)?;
    let summary = ModelSummary::of(&model);
    Ok(if args.json {
        let mut text = to_json(&model, &summary).to_string();
        text.push('\n');
        text
    } else {
        to_text(&model, &summary)
    })
}

/// The `--json` document.
pub fn to_json(model: &GgufModel, summary: &ModelSummary) -> Json {
    let files: Vec<Json> = model
        .shards()
        .map(|s| Json::from(s.path.display().to_string()))
        .collect();
    let metadata: Map<String, Json> = model
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_owned(), value_to_json(v)))
        .collect();
    let tensors: Vec<Json> = model
        .tensors()
        .map(|(shard, t)| {
            json!({
                "name": t.name,
                "type": t.ggml_type.name(),
                "dims": t.dims,
                "shard": shard,
                "offset": t.offset,
                "size": t.size,
            })
        })
        .collect();
    json!({
        "files": files,
        "version": model.version(),
        "metadata": metadata,
        "tensors": tensors,
        "summary": summary,
    })
}

fn or_dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_owned(), T::to_string)
}

/// The human-readable report.
pub fn to_text(model: &GgufModel, s: &ModelSummary) -> String {
    let mut out = String::new();
    let files: Vec<String> = model
        .shards()
        .map(|f| f.path.display().to_string())
        .collect();
    let quant = match (&s.file_type, &s.dominant_type) {
        (Some(ft), Some(dt)) => format!("{ft} (most bytes in {dt})"),
        (ft, dt) => or_dash(&ft.clone().or(dt.clone())),
    };
    let heads = match (s.head_count, s.head_count_kv) {
        (Some(h), Some(kv)) => format!("{h} (kv {kv})"),
        (h, _) => or_dash(&h),
    };
    let tokenizer = match (&s.tokenizer_model, s.vocab_size) {
        (Some(m), Some(n)) => format!("{m}, {n} tokens"),
        (m, n) => or_dash(&m.clone().or(n.map(|n| format!("{n} tokens")))),
    };
    let rows: [(&str, String); 14] = [
        ("files", files.join(", ")),
        ("gguf version", model.version().to_string()),
        ("architecture", or_dash(&s.architecture)),
        ("name", or_dash(&s.name)),
        ("size label", or_dash(&s.size_label)),
        ("parameters", s.parameter_count.to_string()),
        ("quantization", quant),
        ("context length", or_dash(&s.context_length)),
        ("embedding length", or_dash(&s.embedding_length)),
        ("blocks", or_dash(&s.block_count)),
        ("attention heads", heads),
        ("tokenizer", tokenizer),
        (
            "chat template",
            if s.has_chat_template { "yes" } else { "no" }.to_owned(),
        ),
        (
            "total size",
            format!("{} ({} bytes)", human_bytes(s.total_bytes), s.total_bytes),
        ),
    ];
    for (label, value) in rows {
        let _ = writeln!(out, "{:<17} {value}", format!("{label}:"));
    }
    let _ = writeln!(out, "\ntensors ({}):", s.tensor_count);
    let name_width = model
        .tensors()
        .map(|(_, t)| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let multi = model.shard_count() > 1;
    let _ = writeln!(
        out,
        "  {:<name_width$}  {:<8} {:<24} {:>12}{}",
        "NAME",
        "TYPE",
        "SHAPE",
        "SIZE",
        if multi { "  SHARD" } else { "" }
    );
    for (shard, t) in model.tensors() {
        let shape: Vec<String> = t.dims.iter().map(u64::to_string).collect();
        let _ = write!(
            out,
            "  {:<name_width$}  {:<8} {:<24} {:>12}",
            t.name,
            t.ggml_type.name(),
            format!("[{}]", shape.join(", ")),
            human_bytes(t.size),
        );
        if multi {
            let _ = write!(out, "  {}", shard.saturating_add(1));
        }
        out.push('\n');
    }
    out
}
