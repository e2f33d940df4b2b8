//! Who may reach a worker: its socket lives in a directory only the daemon's
//! user can enter (`<runtime dir>/workers`, 0700, refused when someone else
//! owns it or others may write to it), the socket itself is 0600 whatever the
//! umask, and the worker accepts a connection only from the daemon that
//! started it (SO_PEERCRED: the daemon's pid and our own uid). The API key is
//! checked once, at the daemon's edge; without this, anyone who reached a
//! worker's socket would bypass it and the supervisor's leases.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use crate::runtime_dir::RuntimeDirError;
use tokio_stream::{Stream, StreamExt};

/// Name of the workers' directory inside the runtime directory.
pub const WORKERS_DIR: &str = "workers";

/// Creates (or checks) `<runtime_dir>/workers`, mode 0700, and returns it:
/// refused when it is a symlink, someone else's, or writable by others;
/// one of ours that is merely readable by others is tightened to 0700.
pub fn prepare_dir(runtime_dir: &Path) -> Result<PathBuf, RuntimeDirError> {
    let dir = runtime_dir.join(WORKERS_DIR);
    crate::runtime_dir::prepare_private_dir(&dir)?;
    Ok(dir)
}

/// Makes a just-bound socket 0600, whatever the umask was.
pub fn restrict_socket(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Whether a connection comes from the daemon: its pid, and our uid.
fn from_daemon(stream: &UnixStream, daemon_pid: u32, uid: u32) -> bool {
    match stream.peer_cred() {
        Ok(cred) => {
            let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
            if pid == Some(daemon_pid) && cred.uid() == uid {
                return true;
            }
            tracing::warn!(
                peer_pid = pid.unwrap_or(0),
                peer_uid = cred.uid(),
                daemon_pid,
                "refused a connection to this worker from pid {} (uid {}): only the daemon (pid {daemon_pid}, uid {uid}) may connect",
                pid.map_or_else(|| "?".to_owned(), |p| p.to_string()),
                cred.uid()
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "refused a connection to this worker: cannot read its peer credentials: {e}");
            false
        }
    }
}

/// The accepted connections that come from the daemon (`daemon_pid`, our
/// uid); others are closed at once (their calls fail), with a warning.
pub fn daemon_only<S>(
    incoming: S,
    daemon_pid: u32,
) -> impl Stream<Item = std::io::Result<UnixStream>>
where
    S: Stream<Item = std::io::Result<UnixStream>>,
{
    let uid = nix::unistd::geteuid().as_raw();
    incoming.filter(move |conn| match conn {
        Ok(stream) => from_daemon(stream, daemon_pid, uid),
        // Accept errors are the server's to handle.
        Err(_) => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn the_directory_is_created_0700_and_an_open_one_is_refused() {
        let run = tempfile::tempdir().unwrap();
        let dir = prepare_dir(run.path()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // Ours but readable by others: tightened.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_dir(run.path()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // Writable by others: refused, named.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare_dir(run.path()).unwrap_err().to_string();
        assert!(err.contains("lets other users replace"), "{err}");
        std::fs::remove_dir(&dir).unwrap();
        // A symlink to a directory elsewhere: refused.
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), &dir).unwrap();
        let err = prepare_dir(run.path()).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[tokio::test]
    async fn only_the_daemon_pid_gets_through() {
        let run = tempfile::tempdir().unwrap();
        let path = run.path().join("w.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        restrict_socket(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        let _client = UnixStream::connect(&path).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        assert!(from_daemon(&server, std::process::id(), uid));
        assert!(!from_daemon(&server, std::process::id() + 1, uid));
        assert!(!from_daemon(&server, std::process::id(), uid + 1));
    }
}
