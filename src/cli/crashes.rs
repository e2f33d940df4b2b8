//! `llama-router crashes [--json]` and `crashes show ID [--json]`: the
//! daemon's crash reports, through gRPC `ListCrashes` and `GetCrash`.

use serde_json::{Value as Json, json};

use super::CrashesCommand;
use super::client::{ClientError, Target, print};
use crate::proto::pb;

fn summary_json(c: &pb::CrashSummary) -> Json {
    json!({
        "id": c.id,
        "time": c.time,
        "model": c.model,
        "worker_pid": c.worker_pid,
        "signal": if c.signal.is_empty() { Json::Null } else { c.signal.clone().into() },
        "exit_code": c.exit_code,
        "reason": c.reason,
    })
}

fn out(text: &str) -> Result<(), ClientError> {
    print(&mut std::io::stdout().lock(), text)
}

/// Lists the reports, or shows one.
pub async fn run(
    target: &Target,
    command: Option<CrashesCommand>,
    as_json: bool,
) -> Result<(), ClientError> {
    let mut client = target.models().await?;
    if let Some(CrashesCommand::Show { id }) = command {
        let report = client
            .get_crash(pb::GetCrashRequest { id })
            .await?
            .into_inner();
        // The stored report is JSON already: --json prints it as it is.
        if as_json {
            return out(&format!("{}\n", report.json));
        }
        let full: Json = serde_json::from_str(&report.json).unwrap_or(Json::Null);
        let field = |k: &str| full.get(k).cloned().unwrap_or(Json::Null);
        let stderr: Vec<String> = full
            .get("stderr")
            .and_then(Json::as_array)
            .map(|lines| {
                lines
                    .iter()
                    .filter_map(Json::as_str)
                    .map(|l| format!("  {l}"))
                    .collect()
            })
            .unwrap_or_default();
        let requests: Vec<String> = full
            .get("requests")
            .and_then(Json::as_array)
            .map(|all| {
                all.iter()
                    .map(|r| {
                        format!(
                            "{} over {}, {} ms, {} tokens back",
                            r["kind"].as_str().unwrap_or("?"),
                            r["client"].as_str().unwrap_or("?"),
                            r["running_ms"],
                            r["generated_tokens"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let s = report.summary.unwrap_or_default();
        return out(&format!(
            "crash {}\ntime:     {}\nmodel:    {}\nfiles:    {}\nworker:   pid {}\nbuild:    {}\nended:    {}\nsettings: {}\nrequests: {}\ncapture:  {}\nstderr (last {} lines):\n{}\n",
            s.id,
            s.time,
            s.model,
            field("files"),
            s.worker_pid,
            field("build").as_str().unwrap_or_default(),
            s.reason,
            field("settings"),
            if requests.is_empty() {
                "none in flight".to_owned()
            } else {
                requests.join("; ")
            },
            field("capture").as_str().unwrap_or_default(),
            stderr.len(),
            stderr.join("\n"),
        ));
    }
    let list = client
        .list_crashes(pb::ListCrashesRequest {})
        .await?
        .into_inner();
    if as_json {
        let all: Vec<Json> = list.crashes.iter().map(summary_json).collect();
        return out(&format!("{}\n", Json::Array(all)));
    }
    if list.crashes.is_empty() {
        return out(&format!("no crash reports (in {})\n", list.dir));
    }
    let mut text = format!(
        "{:<26} {:<20} {:<8} {:<8} REASON\n",
        "ID", "MODEL", "PID", "SIGNAL"
    );
    for c in &list.crashes {
        let signal = if c.signal.is_empty() {
            c.exit_code
                .map_or_else(String::new, |code| format!("exit {code}"))
        } else {
            c.signal.clone()
        };
        let reason: String = c.reason.chars().take(100).collect();
        text.push_str(&format!(
            "{:<26} {:<20} {:<8} {:<8} {reason}\n",
            c.id, c.model, c.worker_pid, signal
        ));
    }
    out(&text)
}
