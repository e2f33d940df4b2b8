//! `llama-router crashes [--json]` and `crashes show ID [--json]`: the
//! daemon's crash reports, through gRPC `ListCrashes` and `GetCrash`.

use serde_json::{Value as Json, json};

use super::CrashesCommand;
use super::client::{ClientError, Target, print};
use crate::crashes::{CrashReport, ThreadStack};
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
        return match serde_json::from_str::<CrashReport>(&report.json) {
            Ok(full) => out(&describe(&full)),
            // A format this client does not know: show it as it is.
            Err(_) => out(&format!("{}\n", report.json)),
        };
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

/// Frames shown per stack in the text form (`--json` has them all).
const SHOWN_FRAMES: usize = 24;

fn stack(t: &[crate::crashes::Frame]) -> String {
    let mut lines: Vec<String> = t
        .iter()
        .take(SHOWN_FRAMES)
        .enumerate()
        .map(|(i, f)| format!("  #{i:<2} {}", f.one_line()))
        .collect();
    if t.len() > SHOWN_FRAMES {
        lines.push(format!("  ... {} more (--json)", t.len() - SHOWN_FRAMES));
    }
    lines.join("\n")
}

/// One report in words.
fn describe(r: &CrashReport) -> String {
    let requests: Vec<String> = r
        .requests
        .iter()
        .map(|q| {
            format!(
                "{} over {}, {} ms, {} tokens back",
                q.kind, q.client, q.running_ms, q.generated_tokens
            )
        })
        .collect();
    let files: Vec<String> = r.files.iter().map(|f| f.display().to_string()).collect();
    let mut text = format!(
        "crash {}\ntime:     {}\nmodel:    {}\nfiles:    {}\nworker:   pid {}\nbuild:    {}\nended:    {}\n",
        r.id,
        r.time,
        r.model,
        files.join(", "),
        r.worker_pid,
        r.build,
        r.exit.reason,
    );
    if !r.devices.is_empty() {
        text.push_str(&format!("devices:  {}\n", r.devices.join("; ")));
    }
    if let Some(detail) = &r.signal_detail {
        text.push_str(&format!("signal:   {detail}\n"));
    }
    if let Some(fault) = &r.fault {
        let place = fault.file.as_ref().map_or_else(String::new, |f| {
            format!(
                ", in {} at byte {}{}",
                f.path.display(),
                f.offset,
                match (f.past_end, f.file_len) {
                    (true, Some(len)) => format!(
                        ": past its end ({len} bytes now; truncated or replaced under the worker)"
                    ),
                    _ => String::new(),
                }
            )
        });
        text.push_str(&format!("fault:    {}{place}\n", fault.address));
    }
    text.push_str(&format!(
        "settings: {}\nrequests: {}\ncapture:  {}\n",
        serde_json::to_string(&r.settings).unwrap_or_default(),
        if requests.is_empty() {
            "none in flight".to_owned()
        } else {
            requests.join("; ")
        },
        r.capture
    ));
    if !r.backtrace.is_empty() {
        text.push_str(&format!(
            "backtrace (crashing thread):\n{}\n",
            stack(&r.backtrace)
        ));
    }
    for t in &r.threads {
        text.push_str(&format!("{}:\n{}\n", thread_title(t), stack(&t.frames)));
    }
    text.push_str(&format!(
        "stderr (last {} lines):\n{}\n",
        r.stderr.len(),
        r.stderr
            .iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    ));
    text
}

fn thread_title(t: &ThreadStack) -> String {
    match &t.name {
        Some(name) => format!("thread {} ({name})", t.thread_id),
        None => format!("thread {}", t.thread_id),
    }
}
