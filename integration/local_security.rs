//! The local socket holes, tried against the real binary: a runtime
//! directory another user made first, one others may write into, modes under
//! `umask 000`, and a CLI asked to send its key to a socket someone else owns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{bin, tiny_model};

/// The uid and gid of `nobody`: another local user.
const OTHER: u32 = 65534;

/// A world-writable sticky directory in `root`, as /tmp is.
fn shared_tmp(root: &Path) -> std::path::PathBuf {
    let shared = root.join("tmp");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    shared
}

/// `serve` with no runtime directory from systemd or the session, so it falls
/// back to `$TMPDIR/llama-router/`; its exit status and stderr once it
/// stopped, or None (killed) if it was still running after `limit`.
fn serve_in_fallback(tmpdir: &Path, models: &Path, limit: Duration) -> Option<(bool, String)> {
    assert!(
        !Path::new("/run/llama-router").exists(),
        "this test needs /run/llama-router to be absent (the daemon would use it)"
    );
    let log = tmpdir.parent().unwrap().join("serve.log");
    let mut child = Command::new(bin())
        .args(["serve", "--models-dir"])
        .arg(models)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TMPDIR", tmpdir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some((status.success(), std::fs::read_to_string(&log).unwrap()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

#[test]
fn a_fallback_directory_another_user_made_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    std::fs::create_dir(&models).unwrap();
    tiny_model(&models.join("a.gguf"), "a");
    // Another user got there first.
    let shared = shared_tmp(tmp.path());
    let squatted = shared.join("llama-router");
    std::fs::create_dir(&squatted).unwrap();
    std::fs::set_permissions(&squatted, std::fs::Permissions::from_mode(0o755)).unwrap();
    chown(&squatted, OTHER);

    let outcome = serve_in_fallback(&shared, &models, Duration::from_secs(15));
    let (ok, log) = outcome.expect("the daemon started in a directory another user owns");
    assert!(!ok, "{log}");
    assert!(log.contains("owned by uid 65534"), "{log}");
    assert!(!squatted.join("llama-router.sock").exists());
}

#[test]
fn a_fallback_directory_others_may_write_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let shared = shared_tmp(tmp.path());
    let open = shared.join("llama-router");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();

    let outcome = serve_in_fallback(&shared, &models, Duration::from_secs(15));
    let (ok, log) = outcome.expect("the daemon started in a directory anyone may write");
    assert!(!ok, "{log}");
    assert!(log.contains("0777"), "{log}");
}

#[tokio::test]
async fn the_runtime_directory_and_socket_get_their_modes_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let socket = tmp.path().join("run").join("router.sock");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"umask 000; exec "$0" "$@""#)
        .arg(bin())
        .args(["serve", "--models-dir"])
        .arg(&models)
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut up = false;
    while Instant::now() < deadline && !up {
        up = std::os::unix::net::UnixStream::connect(&socket).is_ok();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir_mode = std::fs::metadata(socket.parent().unwrap()).map(|m| m.mode() & 0o7777);
    let socket_mode = std::fs::metadata(&socket).map(|m| m.mode() & 0o777);
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "the daemon did not come up");
    assert_eq!(dir_mode.unwrap(), 0o700);
    assert_eq!(socket_mode.unwrap(), 0o660);
}

#[test]
fn the_cli_sends_nothing_to_a_socket_another_user_put_in_its_place() {
    // A world-writable sticky directory, like /tmp, where another user made
    // llama-router/ first and listens on the socket name the CLI would use.
    let tmp = tempfile::tempdir().unwrap();
    let shared = shared_tmp(tmp.path());
    let squatted = shared.join("llama-router");
    std::fs::create_dir(&squatted).unwrap();
    let socket = squatted.join("llama-router.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    chown(&socket, OTHER);
    chown(&squatted, OTHER);

    let mut cli = Command::new(bin())
        .arg("status")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TMPDIR", &shared)
        .env("LLAMA_ROUTER_API_KEY", "the-secret-key")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // An impostor that never answers would hold a CLI that dialled it: give up after 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cli.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = cli.kill();
    let out = cli.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The impostor must not even have been dialled.
    let dialled = listener.accept().is_ok();
    assert!(
        !dialled,
        "the CLI connected to a socket another user owns; stderr: {stderr}"
    );
    assert!(!out.status.success());
    assert!(stderr.contains("owned by uid 65534"), "{stderr}");
}
