//! Who may reach a worker: its socket lives in a directory only the daemon's
//! user can enter (`<runtime dir>/workers`, 0700, refused when someone else
//! owns it or others may write to it), the socket itself is 0600 whatever the
//! umask, and the worker accepts a connection only from the daemon that
//! started it (SO_PEERCRED: the daemon's pid and our own uid; the worker's
//! half is `child::accept`). The API key is
//! checked once, at the daemon's edge; without this, anyone who reached a
//! worker's socket would bypass it and the supervisor's leases.

use std::path::{Path, PathBuf};

use crate::runtime_dir::RuntimeDirError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

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
}
