//! The spare worker: one `llama-router worker-standby` process kept ready
//! (`child::standby`), which has started and initialised llama.cpp's
//! backends and devices but loads no model. The next worker start takes it
//! and sends it its command line instead of spawning a process; once that
//! worker runs, a new spare starts in its place, beside the taken worker's
//! model load (whose metadata and vocabulary phase keeps one core busy).
//!
//! Its terms: a spare exists only once a first worker started (a daemon that
//! never loads a model starts none); it holds no model, no socket and no GPU
//! memory (its own RAM counts in `--host-cache-bytes`: [`SPARE_BYTES`]); nothing pings it, and one found dead when taken is
//! replaced and the worker spawned as before. A model with its own `env`
//! table, or a daemon with a `worker_wrapper`, never uses one: a process's
//! environment and wrapper are fixed when it starts.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::process::Child;

use super::args::{StandbyArgs, WorkerArgs};
use super::command::{describe_program, worker_command};
use super::exit::WorkerExit;
use super::process::WorkerEnv;

/// Host RAM a spare worker holds, counted in `--host-cache-bytes` when
/// spares are on. Measured with the Vulkan build: 75 MiB resident, of which
/// 15 MiB its own (runtime, llama.cpp's backend state) and the rest the
/// binary's pages, which the daemon maps too (one copy, in the page cache).
pub const SPARE_BYTES: u64 = 16 << 20;

/// The daemon's spare worker, shared by every worker start.
#[derive(Debug, Clone, Default)]
pub struct Spares {
    on: bool,
    slot: Arc<Mutex<Option<Child>>>,
}

impl PartialEq for Spares {
    fn eq(&self, other: &Self) -> bool {
        self.on == other.on && Arc::ptr_eq(&self.slot, &other.slot)
    }
}

impl Spares {
    /// Spares kept (`on`) or never started.
    pub fn new(on: bool) -> Self {
        Spares {
            on,
            slot: Arc::default(),
        }
    }

    /// Whether a worker started in `env` (`own_env`: with environment
    /// variables of its own) may be a spare.
    fn apply(&self, env: &WorkerEnv, own_env: bool) -> bool {
        self.on && !own_env && env.wrapper.is_empty()
    }

    /// A live spare for a worker started in `env`, if it may use one.
    fn take(&self, env: &WorkerEnv, own_env: bool) -> Option<Child> {
        if !self.apply(env, own_env) {
            return None;
        }
        let mut child = self.slot.lock().ok()?.take()?;
        // Still waiting: a spare that died is dropped (reaped by tokio).
        matches!(child.try_wait(), Ok(None)).then_some(child)
    }

    /// Starts a spare for the next worker like this one, unless one waits.
    /// Called once a start has its process, so that the fork and exec are
    /// not on that start's path.
    fn refill(&self, env: &WorkerEnv, own_env: bool) {
        if !self.apply(env, own_env) {
            return;
        }
        let Ok(mut slot) = self.slot.lock() else {
            return;
        };
        if slot.is_none() {
            *slot = start(env)
                .map_err(|e| tracing::warn!(error = %e, "cannot start a spare worker: {e}"))
                .ok();
        }
    }
}

/// The process of the worker `args` describe: the spare, handed its command
/// line, when one may serve; else a fresh spawn with the model's `own_env`.
/// Either way a spare for the next start is then started. True: the spare.
pub async fn launch(
    env: &WorkerEnv,
    args: &WorkerArgs,
    own_env: &BTreeMap<String, String>,
) -> Result<(Child, bool), WorkerExit> {
    let has_env = !own_env.is_empty();
    let spare = match env.spares.take(env, has_env) {
        // One that would not take it is dropped, which kills it.
        Some(spare) => hand_over(spare, args).await.ok(),
        None => None,
    };
    let launched = match spare {
        Some(child) => (child, true),
        None => {
            let extra_env = own_env.iter().map(|(k, v)| (k.clone(), v.clone()));
            let child = worker_command(&env.wrapper, &env.exe, args.to_argv(), extra_env)
                .spawn()
                .map_err(|e| WorkerExit::SpawnFailed {
                    program: describe_program(&env.wrapper, &env.exe),
                    error: e.to_string(),
                })?;
            (child, false)
        }
    };
    env.spares.refill(env, has_env);
    Ok(launched)
}

/// Starts a spare: the worker's command with a piped stdin and no model.
fn start(env: &WorkerEnv) -> std::io::Result<Child> {
    let standby = StandbyArgs {
        parent_pid: std::process::id(),
        log_level: env.log_level.clone(),
    };
    let mut command = worker_command(&[], &env.exe, standby.to_argv(), []);
    command.stdin(Stdio::piped());
    command.spawn()
}

/// Makes `spare` the worker `args` describe: sends it the command line and
/// closes its stdin. Gives the spare back when it would not take it.
async fn hand_over(mut spare: Child, args: &WorkerArgs) -> Result<Child, Child> {
    let Some(mut stdin) = spare.stdin.take() else {
        return Err(spare);
    };
    let sent = stdin.write_all(&args.to_standby_input()).await;
    drop(stdin);
    match sent {
        Ok(()) => Ok(spare),
        Err(e) => {
            tracing::debug!(error = %e, "the spare worker did not take its command line");
            Err(spare)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    /// A stand-in for the binary: `script` run by sh, whatever its argv.
    fn env_with(dir: &Path, script: &str) -> WorkerEnv {
        let exe = dir.join("fake-worker.sh");
        std::fs::write(&exe, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        WorkerEnv {
            exe,
            wrapper: Vec::new(),
            socket_dir: dir.to_path_buf(),
            log_level: "info".into(),
            gpus: Default::default(),
            logs: Default::default(),
            crashes: None,
            spares: Spares::new(true),
        }
    }

    fn args() -> WorkerArgs {
        WorkerArgs {
            model_id: "m".into(),
            socket: "/run/x/w.sock".into(),
            queue: 1,
            parent_pid: std::process::id(),
            log_level: "info".into(),
            chat_template: None,
            crash_socket: None,
            params: Default::default(),
            sampling: Default::default(),
            shards: vec!["/m/a.gguf".into()],
        }
    }

    #[tokio::test]
    async fn a_start_takes_the_spare_the_one_before_it_left_and_sends_it_its_command_line() {
        let dir = tempfile::tempdir().unwrap();
        // Each process its own file: the replacing spare's shell opens its
        // own at once, which must not truncate the one the worker wrote.
        let got = dir.path().join("got");
        let env = env_with(dir.path(), &format!("cat > '{}'.$$", got.display()));
        assert!(
            env.spares.take(&env, false).is_none(),
            "the first start finds none"
        );
        env.spares.refill(&env, false);
        let spare = env
            .spares
            .take(&env, false)
            .expect("the one the first start left");
        assert!(env.spares.slot.lock().unwrap().is_none(), "taken");
        let mut worker = hand_over(spare, &args()).await.unwrap();
        env.spares.refill(&env, false);
        let pid = worker.id().unwrap();
        assert!(worker.wait().await.unwrap().success());
        let sent = std::fs::read(got.with_extension(pid.to_string())).unwrap();
        assert_eq!(WorkerArgs::from_standby_input(&sent).unwrap(), args());
        assert!(
            env.spares.slot.lock().unwrap().is_some(),
            "another replaced it"
        );
    }

    #[tokio::test]
    async fn a_dead_spare_is_not_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with(dir.path(), "exit 3");
        env.spares.refill(&env, false);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(env.spares.take(&env, false).is_none(), "it had exited");
    }

    #[tokio::test]
    async fn no_spare_for_a_model_with_its_own_env_a_wrapper_or_when_off() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with(dir.path(), "exec sleep 30");
        env.spares.refill(&env, true);
        assert!(
            env.spares.slot.lock().unwrap().is_none(),
            "none made for such a start"
        );
        env.spares.refill(&env, false);
        assert!(
            env.spares.take(&env, true).is_none(),
            "its env is fixed at spawn"
        );
        let wrapped = WorkerEnv {
            wrapper: vec!["taskset".into(), "-c".into(), "0".into()],
            ..env.clone()
        };
        assert!(
            wrapped.spares.take(&wrapped, false).is_none(),
            "the wrapper sees each argv"
        );
        assert!(
            env.spares.take(&env, false).is_some(),
            "still kept for a plain start"
        );
        let off = WorkerEnv {
            spares: Spares::new(false),
            ..env.clone()
        };
        off.spares.refill(&off, false);
        assert!(off.spares.take(&off, false).is_none());
    }
}
