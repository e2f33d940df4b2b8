//! `load NAME --dry-run`: what loading would evict and how many layers it
//! would offload, as the daemon's rules decide, without doing it.

use serde_json::json;
use tokio_stream::StreamExt;
use tonic::Status;

use super::client::{ClientError, Target, print};
use crate::proto::pb;
use crate::util::human_bytes;

/// Asks the daemon for the plan and prints it (JSON with `as_json`).
pub async fn load_dry_run(target: &Target, id: &str, as_json: bool) -> Result<(), ClientError> {
    let mut client = target.models().await?;
    let mut stream = client
        .load_model(pb::LoadModelRequest {
            id: id.to_owned(),
            dry_run: true,
            start_worker: false,
        })
        .await?
        .into_inner();
    let Some(plan) = stream.next().await.transpose()?.and_then(|p| p.plan) else {
        return Err(Status::unavailable("the daemon sent no plan").into());
    };
    let text = if as_json {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let value = json!({
            "model": plan.model,
            "evicts": plan.evicts,
            "device": opt(&plan.device),
            "layers": plan.layers,
            "max_layers": plan.max_layers,
            "need_bytes": plan.need_bytes,
            "free_bytes": plan.free_bytes,
            "gpu_evicts": plan.gpu_evicts,
            "refused": opt(&plan.refused),
        });
        format!("{value:#}\n")
    } else {
        describe(&plan)
    };
    print(&mut std::io::stdout().lock(), &text)
}

/// The plan in words.
fn describe(plan: &pb::LoadPlan) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "nothing".to_owned()
        } else {
            v.join(", ")
        }
    };
    let mut text = format!("{}: dry run, nothing done\n", plan.model);
    text.push_str(&format!(
        "  evicts (models-max, host cache): {}\n",
        list(&plan.evicts)
    ));
    if plan.device.is_empty() {
        text.push_str("  offload: none, runs on the CPU\n");
        return text;
    }
    text.push_str(&format!(
        "  offload: {}/{} layers on {} ({} needed, {} free)\n",
        plan.layers,
        plan.max_layers,
        plan.device,
        human_bytes(plan.need_bytes),
        human_bytes(plan.free_bytes)
    ));
    text.push_str(&format!(
        "  evicts from the GPU: {}\n",
        list(&plan.gpu_evicts)
    ));
    if !plan.refused.is_empty() {
        text.push_str(&format!("  refused: {}\n", plan.refused));
    }
    text
}
