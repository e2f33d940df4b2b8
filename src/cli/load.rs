//! `load NAME [--start-worker]`: loads a model through gRPC `LoadModel`,
//! with progress on a terminal and one line at the end.

use std::io::IsTerminal;
use std::time::Instant;

use tokio_stream::StreamExt;
use tonic::Status;

use super::client::{ClientError, Target, print};
use crate::api::convert::state_name;
use crate::proto::pb::{self, load_progress::Phase};
use crate::util::human_bytes;

/// `load NAME [--start-worker]`: progress on a terminal, one line at the
/// end (with what went to the GPU when the worker started).
pub async fn load(target: &Target, id: &str, start_worker: bool) -> Result<(), ClientError> {
    let mut client = target.models().await?;
    let started = Instant::now();
    let mut stream = client
        .load_model(pb::LoadModelRequest {
            id: id.to_owned(),
            dry_run: false,
            start_worker,
        })
        .await?
        .into_inner();
    let tty = std::io::stderr().is_terminal();
    while let Some(progress) = stream.next().await {
        let p = progress?;
        if let Some(model) = p.model {
            if tty {
                eprint!("\r\x1b[2K");
            }
            let gpu = model.gpu.as_ref().map_or_else(String::new, |g| {
                format!(
                    "; {}/{} layers on {}, uploaded in {:.2} s ({}/s), {} GPU memory{}",
                    g.layers,
                    g.max_layers,
                    g.device,
                    g.upload_seconds,
                    human_bytes(g.upload_bytes_per_second),
                    human_bytes(g.reserved_bytes),
                    if g.measured_bytes > 0 {
                        " measured"
                    } else {
                        " estimated"
                    }
                )
            });
            let worker = if model.worker_pid > 0 {
                format!(", worker pid {}", model.worker_pid)
            } else {
                String::new()
            };
            let line = format!(
                "{}: {} ({}) in {:.1} s{worker}{gpu}\n",
                model.id,
                state_name(model.state),
                human_bytes(model.size_bytes),
                started.elapsed().as_secs_f64()
            );
            return print(&mut std::io::stdout().lock(), &line);
        }
        if tty && p.phase == Phase::StartingWorker as i32 {
            eprint!(
                "\r\x1b[2K{id}: in RAM; starting its worker (llama.cpp loads it, uploads GPU layers)"
            );
        } else if tty {
            let phase = match Phase::try_from(p.phase) {
                Ok(Phase::Queued) => "waiting for a free slot",
                Ok(Phase::Mapping) => "mapping",
                _ => "reading into RAM",
            };
            let pct = (p.bytes_done as f64 * 100.0) / (p.bytes_total.max(1) as f64);
            eprint!(
                "\r\x1b[2K{id}: {phase} {pct:5.1}% ({} / {})",
                human_bytes(p.bytes_done),
                human_bytes(p.bytes_total)
            );
        }
    }
    Err(Status::unavailable("the daemon ended the load without a result").into())
}
