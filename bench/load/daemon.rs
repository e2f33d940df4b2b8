//! The daemon under load: `llama-router serve` on a temporary models
//! directory holding the demo model, HTTP on a loopback port, its log in a
//! file; started, checked between rounds and stopped by the harness.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{self, Client, Mode, Outcome};

/// How long the daemon may take to answer `/health`, and the model to load.
const START_LIMIT: Duration = Duration::from_secs(300);

/// How long after a round the daemon may take to let every request go.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);

/// The sum of a gauge's samples (all label sets) in Prometheus text.
fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit (children
/// inherit it): 1,000 clients need 1,000 sockets here and as many in the
/// daemon. Returns the soft limit before and after.
#[allow(unsafe_code)]
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return (0, 0);
    }
    let before = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return (before, before);
    }
    (before, lim.rlim_cur)
}

/// A running daemon, stopped (SIGTERM, then SIGKILL) by `stop` or on drop.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    pub bin: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

fn default_model() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".cache/llama-router/models/gemma-3-270m-q4_k_m.gguf")
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Daemon {
    /// Starts the daemon and waits until its model has answered one request.
    pub async fn start(args: &crate::Args) -> Result<Daemon, String> {
        let bin = args
            .router_bin
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_llama-router")));
        let model = args.model.clone().unwrap_or_else(default_model);
        if !model.is_file() {
            return Err(format!(
                "no demo model at {} (run `make demo-model`, or set DEMO_MODEL)",
                model.display()
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let models = dir.path().join("models");
        std::fs::create_dir(&models).map_err(|e| e.to_string())?;
        // A symlink to outside the directory would not be listed: link or copy.
        let dest = models.join(format!("{}.gguf", crate::MODEL));
        if std::fs::hard_link(&model, &dest).is_err() {
            std::fs::copy(&model, &dest).map_err(|e| format!("copy the model: {e}"))?;
        }
        let port = free_port()?;
        let log = dir.path().join("daemon.log");
        let out = File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg("--models-dir")
            .arg(&models)
            .arg("--socket")
            .arg(dir.path().join("router.sock"))
            .args(["--http-host", "127.0.0.1", "--http-port", &port.to_string()])
            .args(&args.daemon_args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(soft) = args.daemon_nofile {
            limit_nofile(&mut cmd, soft);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let mut d = Daemon {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            bin,
            log,
            _dir: dir,
        };
        println!(
            "daemon: {} (pid {}), http://{}, log {}",
            d.bin.display(),
            d.pid(),
            d.addr,
            d.log.display()
        );
        d.warm_up()
            .await
            .map_err(|e| format!("{e}; last lines of the log:\n{}", d.log_tail(30)))?;
        Ok(d)
    }

    /// Waits for `/health`, then for one whole completion (the model loads on it).
    async fn warm_up(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let deadline = started + START_LIMIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            if !self.running() {
                return Err("the daemon exited during start-up".to_owned());
            }
            match client::get(self.addr, "/health", Duration::from_secs(5)).await {
                Ok((200, _)) => break,
                Ok((status, _)) => last = format!("/health answered {status}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let body = serde_json::json!({"model": crate::MODEL, "prompt": "Hello", "max_tokens": 4})
            .to_string();
        let mut client = Client::new(self.addr);
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match client
                .post("/v1/completions", &body, Mode::Whole, left)
                .await
            {
                Outcome::Served { .. } => {
                    println!(
                        "daemon: ready, {} loaded, in {:.1} s",
                        crate::MODEL,
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
                other => last = format!("{other:?}"),
            }
            if !self.running() {
                return Err("the daemon exited during start-up".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("not serving within {START_LIMIT:?}: {last}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What is wrong with the daemon now: exited, unhealthy, or `model` gone.
    pub async fn check(&mut self, model: &str) -> Vec<String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return vec![format!("the daemon exited: {status}")];
        }
        let limit = Duration::from_secs(10);
        let mut problems = Vec::new();
        match client::get(self.addr, "/health", limit).await {
            Ok((200, _)) => {}
            Ok((status, body)) => problems.push(format!(
                "/health answered {status}: {}",
                String::from_utf8_lossy(&body)
            )),
            Err(e) => problems.push(format!("/health: {e}")),
        }
        match client::get(self.addr, &format!("/v1/models/{model}"), limit).await {
            Ok((200, _)) => {}
            Ok((status, _)) => problems.push(format!("/v1/models/{model} answered {status}")),
            Err(e) => problems.push(format!("/v1/models/{model}: {e}")),
        }
        problems.extend(self.drained().await);
        problems
    }

    /// Waits for the requests the clients left (or timed out on) to be let go:
    /// `requests_active` and `requests_queued` back to 0, as a leaked slot or
    /// lease would not be.
    async fn drained(&self) -> Option<String> {
        let deadline = Instant::now() + DRAIN_LIMIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match client::get(self.addr, "/metrics", Duration::from_secs(10)).await {
                Ok((200, body)) => {
                    let text = String::from_utf8_lossy(&body);
                    let (active, queued) = (
                        gauge(&text, "llama_router_requests_active"),
                        gauge(&text, "llama_router_requests_queued"),
                    );
                    if active == 0.0 && queued == 0.0 {
                        return None;
                    }
                    last = format!("{active} requests active and {queued} queued");
                }
                Ok((status, _)) => last = format!("/metrics answered {status}"),
                Err(e) => last = format!("/metrics: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Some(format!("{last}, {DRAIN_LIMIT:?} after the round"))
    }

    /// The last `lines` lines of the daemon's log (from its last 64 KiB).
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map_or(0, |m| m.len());
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, up to 20 s to drain, then SIGKILL.
    pub async fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.running() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Gives the daemon a soft RLIMIT_NOFILE of `soft` (to reproduce a small
/// limit such as systemd's default 1,024), keeping the hard limit.
#[allow(unsafe_code)]
fn limit_nofile(cmd: &mut Command, soft: u64) {
    // SAFETY: the closure runs between fork and exec and calls only
    // getrlimit/setrlimit, which are async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = soft.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
