//! The command line and environment a worker is started with: an explicit
//! argv (prefixed by the `worker_wrapper` command, when configured, for
//! numactl, taskset or a test's misbehaving stand-in) and an environment that
//! inherits nothing by accident.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

/// `wrapper... exe argv...` with piped stdout/stderr, no stdin, the filtered
/// environment plus `extra_env`, killed when its handle drops. The wrapper
/// must exec the worker (as numactl and taskset do): the worker checks that
/// its parent is the daemon.
pub fn worker_command(
    wrapper: &[String],
    exe: &Path,
    argv: Vec<OsString>,
    extra_env: impl IntoIterator<Item = (String, String)>,
) -> Command {
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    command
        .args(argv)
        .env_clear()
        .envs(crate::util::child_env(std::env::vars_os()))
        .envs(extra_env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// What was started, in words, for an error: the wrapper when there is one.
pub fn describe_program(wrapper: &[String], exe: &Path) -> String {
    match wrapper.first() {
        Some(program) => format!("{program} (worker_wrapper {wrapper:?})"),
        None => exe.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_prefixes_the_worker_argv() {
        let wrapper = vec!["numactl".to_owned(), "--cpunodebind=0".to_owned()];
        let exe = Path::new("/usr/bin/llama-router");
        let c = worker_command(&wrapper, exe, vec!["worker".into()], []);
        let std = c.as_std();
        assert_eq!(std.get_program(), "numactl");
        let args: Vec<_> = std.get_args().collect();
        assert_eq!(args, ["--cpunodebind=0", "/usr/bin/llama-router", "worker"]);
        let plain = worker_command(&[], exe, vec!["worker".into()], []);
        assert_eq!(plain.as_std().get_program(), exe);
        assert!(describe_program(&wrapper, exe).contains("worker_wrapper"));
    }
}
