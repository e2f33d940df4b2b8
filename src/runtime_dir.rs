//! Who may be trusted with the daemon's sockets: the runtime directory is
//! created with an explicit mode (0700, or 0750 with a socket group) and an
//! existing one is used only when nobody else could own or replace what is
//! in it; sockets get an explicit mode whatever the umask. The CLI applies
//! the same rule before it sends an API key to a socket.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid};

/// Mode of the runtime directory the daemon creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the runtime directory when a socket group may use it.
pub const GROUP_DIR_MODE: u32 = 0o750;
/// Mode of every socket the daemon binds.
pub const SOCKET_MODE: u32 = 0o660;

/// A directory or socket that must not be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    /// It is owned by another user.
    #[error(
        "refusing {}: it is owned by uid {owner}, not by us (uid {us}) or root; another user may have created it to capture the socket. Remove it, or choose another path with --socket",
        path.display()
    )]
    NotOurs {
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        us: u32,
    },
    /// Others may write into it, so they could replace the socket.
    #[error(
        "refusing {}: its mode {mode:04o} lets other users replace what is in it; make it 0700 (chmod 700), or choose another path with --socket",
        path.display()
    )]
    WritableByOthers {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It is a symlink or a file, not a directory.
    #[error("refusing {}: it is not a directory (a symlink or a file)", .0.display())]
    NotADirectory(PathBuf),
    /// The socket group does not exist.
    #[error("socket_group {0:?} is neither a group name nor a group id on this system")]
    UnknownGroup(String),
    /// Creating or inspecting it failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeDirError {
    let path = path.to_path_buf();
    move |source| RuntimeDirError::Io { what, path, source }
}

/// The group named by `socket_group` (a name or a number).
pub fn resolve_group(name: &str) -> Result<Gid, RuntimeDirError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Gid::from_raw(gid));
    }
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid),
        _ => Err(RuntimeDirError::UnknownGroup(name.to_owned())),
    }
}

/// Whether the mode lets users other than the owner (and the group, when
/// `group_may_write`) create or remove entries: a sticky directory does not.
fn others_may_replace(mode: u32, group_may_write: bool) -> bool {
    let sticky = mode & 0o1000 != 0;
    let foreign_write = if group_may_write {
        mode & 0o002
    } else {
        mode & 0o022
    };
    foreign_write != 0 && !sticky
}

/// Checks that `dir` can be trusted with sockets: owned by us or root and
/// not writable by others, or (for a client, `handed_over`) given to its
/// owner by root in a directory only root can write (`/run/llama-router`
/// owned by the service's user).
fn check_dir(dir: &Path, handed_over: bool) -> Result<(), RuntimeDirError> {
    // lstat: a symlink planted there must not lead us elsewhere.
    let meta = std::fs::symlink_metadata(dir).map_err(io_error("cannot inspect", dir))?;
    if !meta.file_type().is_dir() {
        return Err(RuntimeDirError::NotADirectory(dir.to_path_buf()));
    }
    let us = Uid::effective().as_raw();
    let mode = meta.mode() & 0o7777;
    if meta.uid() == us || meta.uid() == 0 {
        if others_may_replace(mode, false) {
            return Err(RuntimeDirError::WritableByOthers {
                path: dir.to_path_buf(),
                mode,
            });
        }
        return Ok(());
    }
    // Someone else's: trusted only if root put it there and only its owner writes into it.
    let root_made = dir
        .parent()
        .and_then(|p| std::fs::metadata(p).ok())
        .is_some_and(|p| p.uid() == 0 && p.mode() & 0o022 == 0);
    if handed_over && root_made && !others_may_replace(mode, false) {
        return Ok(());
    }
    Err(RuntimeDirError::NotOurs {
        path: dir.to_path_buf(),
        owner: meta.uid(),
        us,
    })
}

/// Creates the runtime directory `dir` (0700, or 0750 and owned by `group`)
/// or checks that the existing one is ours (or root's) and private.
pub fn prepare_dir(dir: &Path, group: Option<Gid>) -> Result<(), RuntimeDirError> {
    let mode = if group.is_some() {
        GROUP_DIR_MODE
    } else {
        DIR_MODE
    };
    if !dir.exists() {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(io_error("cannot create", parent))?;
        }
        match std::fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => {
                // The umask may have taken bits away; set exactly what we mean.
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                    .map_err(io_error("cannot set the mode of", dir))?;
                if let Some(gid) = group {
                    nix::unistd::chown(dir, None, Some(gid)).map_err(|e| RuntimeDirError::Io {
                        what: "cannot give the socket group",
                        path: dir.to_path_buf(),
                        source: e.into(),
                    })?;
                }
            }
            // Someone made it meanwhile: check it like any existing one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("cannot create", dir)(e)),
        }
    }
    check_dir(dir, false)
}

/// Creates (or checks) a directory only we may enter: like [`prepare_dir`]
/// without a group, it must be ours rather than root's when we are not
/// root, and one merely readable by others is tightened to 0700.
pub fn prepare_private_dir(dir: &Path) -> Result<(), RuntimeDirError> {
    prepare_dir(dir, None)?;
    let meta = std::fs::symlink_metadata(dir).map_err(io_error("cannot inspect", dir))?;
    let us = Uid::effective().as_raw();
    if meta.uid() != us {
        return Err(RuntimeDirError::NotOurs {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            us,
        });
    }
    if meta.mode() & 0o7777 != DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
            .map_err(io_error("cannot set the mode of", dir))?;
    }
    Ok(())
}

/// Gives a freshly bound socket its mode (and group) regardless of the umask.
pub fn secure_socket(path: &Path, group: Option<Gid>) -> Result<(), RuntimeDirError> {
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| RuntimeDirError::Io {
            what: "cannot give the socket group",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io_error("cannot set the mode of", path))
}

/// Checks a socket before a client sends it anything (an API key above
/// all): its directory is ours, root's or one root handed to a service
/// user, nobody else may write into it, and the socket belongs to us, root
/// or that directory's owner.
pub fn check_socket(path: &Path) -> Result<(), RuntimeDirError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    check_dir(&dir, true)?;
    let meta = std::fs::symlink_metadata(path).map_err(io_error("cannot inspect", path))?;
    let dir_owner = std::fs::metadata(&dir)
        .map_err(io_error("cannot inspect", &dir))?
        .uid();
    let us = Uid::effective().as_raw();
    if [us, 0, dir_owner].contains(&meta.uid()) {
        Ok(())
    } else {
        Err(RuntimeDirError::NotOurs {
            path: path.to_path_buf(),
            owner: meta.uid(),
            us,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owner_writable_or_sticky_directories_are_safe() {
        assert!(!others_may_replace(0o700, false));
        assert!(!others_may_replace(0o755, false));
        assert!(others_may_replace(0o775, false));
        assert!(others_may_replace(0o777, false));
        assert!(!others_may_replace(0o1777, false));
        assert!(!others_may_replace(0o770, true));
    }

    #[test]
    fn a_created_directory_has_its_mode_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let made = prepare_dir(&dir, None);
        nix::sys::stat::umask(old);
        made.unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o7777;
        assert_eq!(mode, DIR_MODE);
        // Ours and private: accepted again.
        prepare_dir(&dir, None).unwrap();
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare_dir(&dir, None).unwrap_err();
        assert!(
            matches!(err, RuntimeDirError::WritableByOthers { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("0777"), "{err}");
    }
}
