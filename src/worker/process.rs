//! The daemon's side of a worker: spawn it with an explicit argv and
//! environment, forward its logs, keep the tail of its stderr, kill it when
//! it floods its pipes, ping it, stop it gracefully (SIGTERM, then SIGKILL),
//! and say in words why it died.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::args::{READY_LINE, WorkerArgs};
use super::crash::{Crashed, Pending, capture_server, device_names, log_when_symbolized, record};
use super::exit::{WorkerEnded, WorkerExit};
use super::in_flight::InFlight;
use super::liveness::liveness;
use super::logbook::LogBook;
use super::logs::{OutputMeter, StderrTail};
use super::spare::{self, Spares};
use crate::crashes::{CaptureServer, CrashStore};
use crate::proto::worker_pb::worker_service_client::WorkerServiceClient;
use crate::settings::{WorkerExtras, WorkerSettings};

/// Stderr lines quoted in a failure reason.
const REASON_LINES: usize = 3;
/// Characters of each of those lines quoted (the log event has them whole).
const REASON_LINE_CHARS: usize = 300;
/// How long a crashed worker's stderr relay gets to read its last lines.
const STDERR_DRAIN: Duration = Duration::from_secs(1);

/// Where workers come from: the binary, the socket directory, the log level.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerEnv {
    /// This binary (`llama-router`).
    pub exe: PathBuf,
    /// Command prefixed to the worker's argv (`worker_wrapper`); empty: none.
    pub wrapper: Vec<String>,
    /// Directory for the workers' sockets (`<runtime dir>/workers`, 0700: see `sockets`).
    pub socket_dir: PathBuf,
    /// Log filter passed to workers.
    pub log_level: String,
    /// The GPUs workers offload to, with their VRAM ledgers.
    pub gpus: crate::gpu::devices::GpuSet,
    /// Where every worker's recent log lines are kept for the console.
    pub logs: LogBook,
    /// Where crash reports go (none: not kept).
    pub crashes: Option<CrashStore>,
    /// The spare worker a start takes instead of spawning (`spare`).
    pub spares: Spares,
}

/// What requests hold of a running worker: its channel and how it ended.
#[derive(Debug, Clone)]
pub struct WorkerLink {
    /// The model it serves (its id, never an alias).
    pub model: String,
    /// Its process id.
    pub pid: u32,
    /// gRPC to its `InferenceService`.
    pub channel: Channel,
    /// The requests it is serving (its crash report lists them).
    pub in_flight: InFlight,
    exit: watch::Receiver<Option<WorkerEnded>>,
}

impl WorkerLink {
    /// Why the worker ended, waiting up to `wait` for it to be known (a
    /// broken stream usually arrives a moment before the exit status).
    pub async fn exit_reason(&self, wait: Duration) -> Option<WorkerEnded> {
        let mut exit = self.exit.clone();
        let ended = tokio::time::timeout(wait, exit.wait_for(Option::is_some)).await;
        match ended {
            Ok(Ok(e)) => e.clone(),
            _ => None,
        }
    }
}

/// A running worker, owned by its model actor.
pub struct WorkerProcess {
    model_id: String,
    pid: u32,
    child: Child,
    socket: PathBuf,
    link: WorkerLink,
    exit: watch::Sender<Option<WorkerEnded>>,
    tail: Arc<Mutex<StderrTail>>,
    /// Relays stderr into `tail` and the log; done once the pipe closes.
    stderr_relay: Option<JoinHandle<()>>,
    /// Its output so far; says when it flooded.
    output: Arc<OutputMeter>,
    /// Fires once stdout carried the READY line.
    ready: Option<oneshot::Receiver<()>>,
    settings: WorkerSettings,
    /// The console's log ring, told how the worker started and ended.
    logs: LogBook,
    /// The model's files (a crash report names them).
    shards: Vec<PathBuf>,
    /// Where its crash report goes.
    crashes: Option<CrashStore>,
    /// Its crash capture server, while it runs.
    capture: Option<CaptureServer>,
    /// The devices discovery found, as its crash report names them.
    devices: Vec<String>,
}

impl WorkerProcess {
    /// Starts a worker for `model_id` over `shards` and waits until it serves.
    /// `generation` keeps socket names unique across restarts; `model_env`
    /// (the model's config table) adds environment, sampling defaults and a chat template.
    pub async fn start(
        model_id: &str,
        shards: Vec<PathBuf>,
        generation: u64,
        settings: WorkerSettings,
        env: &WorkerEnv,
        extras: &WorkerExtras,
    ) -> Result<Self, WorkerEnded> {
        // One name per worker start: its socket, crash capture socket and dump.
        let name = |ext: &str| {
            env.socket_dir
                .join(format!("worker-{}-{generation}.{ext}", std::process::id()))
        };
        let socket = name("sock");
        // Crash capture: without it a crash still gets the daemon's report.
        let capture = env
            .crashes
            .as_ref()
            .and_then(|_| capture_server(model_id, name("crash"), name("dmp")));
        let mut params = settings.params;
        // 0 = one per core of the daemon's machine, counted here so that the
        // worker's argv says what it runs with.
        if params.threads == 0 {
            params.threads = std::thread::available_parallelism()
                .map_or(4, |n| u32::try_from(n.get()).unwrap_or(4));
        }
        let args = WorkerArgs {
            model_id: model_id.to_owned(),
            socket: socket.clone(),
            queue: settings.queue,
            parent_pid: std::process::id(),
            log_level: env.log_level.clone(),
            chat_template: extras.chat_template.clone(),
            crash_socket: capture.as_ref().map(|c| c.socket().to_path_buf()),
            params,
            sampling: extras.sampling,
            shards: shards.clone(),
        };
        let (mut child, from_spare) = spare::launch(env, &args, &extras.env).await?;
        let pid = child.id().unwrap_or(0);
        let how = if from_spare { ", the spare worker" } else { "" };
        env.logs
            .push(model_id, "INFO", format!("worker started (pid {pid}{how})"));
        let tail = Arc::new(Mutex::new(StderrTail::default()));
        let output = OutputMeter::new();
        let stderr_relay = child.stderr.take().map(|stderr| {
            tokio::spawn(super::logs::forward_stderr(
                stderr,
                model_id.to_owned(),
                pid,
                tail.clone(),
                output.clone(),
                env.logs.clone(),
            ))
        });
        let (ready_tx, ready) = oneshot::channel();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(super::logs::watch_stdout(
                stdout,
                model_id.to_owned(),
                READY_LINE,
                ready_tx,
                output.clone(),
            ));
        }
        let (exit, exit_rx) = watch::channel(None);
        let mut process = WorkerProcess {
            model_id: model_id.to_owned(),
            pid,
            child,
            socket: socket.clone(),
            link: WorkerLink {
                model: model_id.to_owned(),
                pid,
                channel: Channel::from_static("http://localhost").connect_lazy(),
                in_flight: InFlight::default(),
                exit: exit_rx,
            },
            exit,
            tail,
            stderr_relay,
            output,
            ready: Some(ready),
            settings,
            logs: env.logs.clone(),
            shards,
            crashes: env.crashes.clone(),
            capture,
            devices: device_names(&env.gpus),
        };
        let ready = tokio::time::timeout(settings.start_timeout, process.wait_ready()).await;
        let failure = match ready {
            Ok(Ok(())) => match crate::proto::transport::unix_channel(socket).await {
                Ok(channel) => {
                    process.link.channel = channel;
                    tracing::info!(model = %model_id, worker_pid = pid, "worker for {model_id} is serving (pid {pid})");
                    return Ok(process);
                }
                Err(e) => WorkerExit::NoSocket(e.to_string()),
            },
            Ok(Err(exit)) => exit,
            Err(_) => WorkerExit::StartTimeout(settings.start_timeout),
        };
        let _ = process.child.start_kill();
        let _ = process.child.wait().await;
        Err(process.ended(failure).await)
    }

    /// Waits for the READY line, or the worker's exit, or its flooding its pipes.
    async fn wait_ready(&mut self) -> Result<(), WorkerExit> {
        let Some(ready) = self.ready.take() else {
            return Err(WorkerExit::Lost("it has no stdout".to_owned()));
        };
        let output = self.output.clone();
        let seen = tokio::select! {
            seen = ready => seen.is_ok(),
            status = self.child.wait() => return Err(exit_of(status)),
            why = output.flooded() => return Err(WorkerExit::Flooded(why)),
        };
        if seen {
            return Ok(());
        }
        // stdout closed without READY: the worker is exiting (report how), or
        // it flooded stdout and its helpers may live on (kill it).
        tokio::select! {
            status = self.child.wait() => Err(exit_of(status)),
            why = output.flooded() => Err(WorkerExit::Flooded(why)),
        }
    }

    /// What llama.cpp in the worker reported it put where (layers, buffers);
    /// `None` when the worker does not answer within a few seconds.
    pub async fn offload(&self) -> Option<crate::engine::offload::Offload> {
        use crate::engine::offload::{Buffer, Offload};
        let mut client = WorkerServiceClient::new(self.link.channel.clone());
        let call = client.offload(crate::proto::worker_pb::OffloadRequest {});
        let reply = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .ok()?
            .ok()?
            .into_inner();
        Some(Offload {
            layers: (reply.layers_total > 0)
                .then_some((reply.layers_offloaded, reply.layers_total)),
            buffers: reply
                .buffers
                .into_iter()
                .map(|b| Buffer {
                    name: b.name,
                    kind: b.kind,
                    bytes: b.bytes,
                })
                .collect(),
        })
    }

    /// What requests use to reach it.
    pub fn link(&self) -> WorkerLink {
        self.link.clone()
    }

    /// Watches the worker until `stop` fires (then stops it gracefully and
    /// returns None) or it dies or hangs (returns how).
    pub async fn supervise(mut self, mut stop: oneshot::Receiver<()>) -> Option<WorkerEnded> {
        let (hung_tx, mut hung) = mpsc::channel(1);
        let pinger = tokio::spawn(liveness(
            WorkerServiceClient::new(self.link.channel.clone()),
            self.settings,
            hung_tx,
        ));
        let output = self.output.clone();
        let outcome = tokio::select! {
            _ = &mut stop => {
                self.stop().await;
                None
            }
            why = output.flooded() => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                Some(WorkerExit::Flooded(why))
            }
            status = self.child.wait() => Some(exit_of(status)),
            Some(hang) = hung.recv() => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                Some(WorkerExit::Hung(hang))
            }
        };
        pinger.abort();
        match outcome {
            None => {
                self.ended(WorkerExit::Stopped).await;
                None
            }
            Some(exit) => Some(self.ended(exit).await),
        }
    }

    /// SIGTERM, then SIGKILL once the grace period is over.
    async fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let grace = self.settings.stop_timeout;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(model = %self.model_id, worker_pid = self.pid, "worker still busy after {} s (--stop-timeout): killing it", grace.as_secs());
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }

    /// Records how it ended (with the tail of its stderr for a crash), logs a
    /// crash as one ERROR event, and removes its socket. A worker that
    /// flooded ended for that reason, whatever signal the kill showed as.
    async fn ended(&mut self, mut exit: WorkerExit) -> WorkerEnded {
        let _ = std::fs::remove_file(&self.socket);
        if let Some(flood) = self.output.verdict() {
            exit = WorkerExit::Flooded(flood);
        }
        let mut ended = WorkerEnded::from(exit);
        if ended.crashed() {
            // Its last words may still be in the pipe: let the relay read
            // them (bounded: a grandchild may hold the pipe open).
            if let Some(relay) = self.stderr_relay.as_mut() {
                let _ = tokio::time::timeout(STDERR_DRAIN, relay).await;
            }
            let tail: Vec<String> = self
                .tail
                .lock()
                .map(|t| t.lines().map(str::to_owned).collect())
                .unwrap_or_default();
            ended.last_stderr = tail
                .iter()
                .rev()
                .take(REASON_LINES)
                .rev()
                .map(|l| quote(l))
                .collect();
            let mut pending = None;
            if let Some(store) = &self.crashes {
                let captured = match self.capture.as_mut() {
                    Some(capture) => capture.finish(CAPTURE_WAIT).await,
                    None => Default::default(),
                };
                let crashed = Crashed {
                    model: &self.model_id,
                    files: &self.shards,
                    pid: self.pid,
                    settings: self.settings.params,
                    exit: &ended.exit,
                    reason: ended.to_string(),
                    stderr: tail.clone(),
                    requests: self.link.in_flight.snapshot(),
                    captured: &captured,
                    devices: self.devices.clone(),
                };
                if let Some(report) = record(store, crashed).await {
                    ended.crash_id = Some(report.id.clone());
                    pending = Some(Pending {
                        store: store.clone(),
                        report,
                        captured,
                    });
                }
            }
            // The model learns how its worker ended now; symbolizing the
            // dump completes the report after.
            log_when_symbolized(
                pending,
                ended.clone(),
                self.model_id.clone(),
                self.pid,
                tail.join("\n"),
            );
        }
        let level = if ended.crashed() { "ERROR" } else { "INFO" };
        self.logs.push(
            &self.model_id,
            level,
            format!("worker (pid {}) ended: {ended}", self.pid),
        );
        self.exit.send_replace(Some(ended.clone()));
        ended
    }
}

/// How long a crashed worker's minidump may take to be written.
const CAPTURE_WAIT: Duration = Duration::from_secs(10);

/// How a child `wait` ended.
fn exit_of(status: std::io::Result<ExitStatus>) -> WorkerExit {
    status.map_or_else(|e| WorkerExit::Lost(e.to_string()), WorkerExit::of_status)
}

/// A stderr line as a failure reason quotes it: at most `REASON_LINE_CHARS`
/// characters, plus the relay's marker of how much of it was cut.
fn quote(line: &str) -> String {
    let Some((end, _)) = line.char_indices().nth(REASON_LINE_CHARS) else {
        return line.to_owned();
    };
    let marker = line
        .rfind("… [")
        .and_then(|i| line.get(i..))
        .filter(|m| m.ends_with(" cut]") && m.len() < 100)
        .unwrap_or("…");
    format!("{}{marker}", line.get(..end).unwrap_or_default())
}

impl Drop for WorkerProcess {
    /// The child dies with the handle (kill_on_drop); its socket must not outlive it.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}
