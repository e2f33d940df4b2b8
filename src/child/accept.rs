//! The worker's half of who may reach it (the daemon's half, the 0700
//! directory, is `worker::sockets`): its socket is 0600 whatever the umask,
//! and it accepts a connection only from the daemon that started it
//! (SO_PEERCRED: the daemon's pid and our own uid).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::net::UnixStream;
use tokio_stream::{Stream, StreamExt};

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
