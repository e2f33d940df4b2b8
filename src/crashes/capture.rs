//! The daemon's end of in-process crash capture. Each worker gets a
//! minidumper server on a socket in the private worker directory; when a
//! fault signal hits the worker, its crash-handler (see `child::capture`)
//! tells this server who sent the signal and asks it for a minidump, which
//! minidump-writer takes from outside the crashed process (ptrace), while
//! the worker waits in its signal handler. The report then unwinds and
//! symbolizes that dump ([`super::analyze`]).
//!
//! Only the worker may reach the socket. minidumper cannot check a client's
//! credentials when it connects, so the first client to connect is taken to
//! be the worker (which connects first thing, before it loads anything) and
//! the socket's path is removed then: from then on no other process can
//! connect at all. Before that the socket is 0600 in a 0700 directory of the
//! daemon's, so only a process of the daemon's own uid could get in first;
//! the worker would then run without capture and say so.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

/// The message kind carrying the signal's origin ([`SigInfo`]).
pub const SIGINFO_MESSAGE: u32 = 1;

/// What the kernel told the crashed worker about its signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigInfo {
    /// The signal.
    pub signo: u32,
    /// `si_code`: how it came (a fault kind, or sent by a process when <= 0).
    pub code: i32,
    /// The sender's pid, for a signal another process sent.
    pub pid: u32,
    /// The sender's uid, likewise.
    pub uid: u32,
    /// The fault address.
    pub addr: u64,
}

impl SigInfo {
    /// Encoded size.
    pub const LEN: usize = 24;

    /// Fixed little-endian layout: built in a signal handler, so no allocation.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let parts: [&[u8]; 5] = [
            &self.signo.to_le_bytes(),
            &self.code.to_le_bytes(),
            &self.pid.to_le_bytes(),
            &self.uid.to_le_bytes(),
            &self.addr.to_le_bytes(),
        ];
        let mut at = 0;
        for part in parts {
            for (slot, byte) in out.iter_mut().skip(at).zip(part) {
                *slot = *byte;
            }
            at += part.len();
        }
        out
    }

    /// The message a worker sent, or None when it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let word = |at: usize| -> Option<[u8; 4]> { bytes.get(at..at + 4)?.try_into().ok() };
        let addr: [u8; 8] = bytes.get(16..24)?.try_into().ok()?;
        (bytes.len() == Self::LEN).then_some(())?;
        Some(SigInfo {
            signo: u32::from_le_bytes(word(0)?),
            code: i32::from_le_bytes(word(4)?),
            pid: u32::from_le_bytes(word(8)?),
            uid: u32::from_le_bytes(word(12)?),
            addr: u64::from_le_bytes(addr),
        })
    }
}

/// What one worker's capture produced.
#[derive(Debug, Default)]
pub struct Captured {
    /// The minidump's bytes (read and its file removed at once), or why there is none.
    pub minidump: Option<Result<Vec<u8>, String>>,
    /// The signal's origin, when the worker sent it.
    pub siginfo: Option<SigInfo>,
}

#[derive(Default)]
struct Shared {
    /// A dump was asked for (the worker is crashing).
    requested: AtomicBool,
    siginfo: Mutex<Option<SigInfo>>,
    done: Mutex<Option<oneshot::Sender<Result<PathBuf, String>>>>,
}

/// One worker's capture server; stops (and removes its files) when dropped.
pub struct CaptureServer {
    socket: PathBuf,
    dump: PathBuf,
    shutdown: Arc<AtomicBool>,
    shared: Arc<Shared>,
    done: Option<oneshot::Receiver<Result<PathBuf, String>>>,
}

impl CaptureServer {
    /// Listens on `socket` (in a directory only the daemon can use); a dump goes to `dump`.
    pub fn start(socket: PathBuf, dump: PathBuf) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(&socket);
        let name = socket
            .to_str()
            .ok_or_else(|| std::io::Error::other(format!("{} is not UTF-8", socket.display())))?;
        let mut server = minidumper::Server::with_name(minidumper::SocketName::path(name))
            .map_err(std::io::Error::other)?;
        // 0600 whatever the umask (its directory is 0700 as well).
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let (tx, rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            done: Mutex::new(Some(tx)),
            ..Shared::default()
        });
        let shutdown = Arc::new(AtomicBool::new(false));
        let handler = Handler {
            dump: dump.clone(),
            socket: socket.clone(),
            shared: shared.clone(),
        };
        let stop = shutdown.clone();
        std::thread::Builder::new()
            .name("crash-capture".into())
            .spawn(move || {
                if let Err(e) = server.run(Box::new(handler), &stop, None) {
                    tracing::debug!(error = %e, "crash capture server ended: {e}");
                }
            })?;
        Ok(CaptureServer {
            socket,
            dump,
            shutdown,
            shared,
            done: Some(rx),
        })
    }

    /// Where the worker connects.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// After the worker ended: what it captured. Waits up to `wait` for a
    /// dump that was asked for; returns at once when none was.
    pub async fn finish(&mut self, wait: Duration) -> Captured {
        let siginfo = *self
            .shared
            .siginfo
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(done) = self.done.take() else {
            return Captured::default();
        };
        let minidump = if self.shared.requested.load(Ordering::Acquire) {
            Some(match tokio::time::timeout(wait, done).await {
                Ok(Ok(Ok(path))) => read_dump(&path).await,
                Ok(Ok(Err(why))) => Err(why),
                Ok(Err(_)) => Err("the capture server stopped before the dump was written".into()),
                Err(_) => Err(format!("no dump within {} s", wait.as_secs())),
            })
        } else {
            None
        };
        Captured { minidump, siginfo }
    }
}

impl Drop for CaptureServer {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.dump);
    }
}

struct Handler {
    dump: PathBuf,
    /// Removed once the worker is connected.
    socket: PathBuf,
    shared: Arc<Shared>,
}

impl minidumper::ServerHandler for Handler {
    fn on_client_connected(&self, clients: usize) -> minidumper::LoopAction {
        if clients == 1 {
            // The worker is in: nothing else may connect (see the module doc).
            if let Err(e) = std::fs::remove_file(&self.socket) {
                tracing::warn!(error = %e, "cannot remove the crash capture socket {}: {e}", self.socket.display());
            }
        } else {
            // Only a process that got in before the worker can be here: it
            // is not the worker, so stop rather than trust what it sends.
            tracing::warn!(
                "a second process connected to the crash capture socket {}; capture for this worker stops",
                self.socket.display()
            );
            self.finished(Err(
                "a second process connected to the crash capture socket".into(),
            ));
            return minidumper::LoopAction::Exit;
        }
        minidumper::LoopAction::Continue
    }

    fn create_minidump_file(&self) -> Result<(std::fs::File, PathBuf), std::io::Error> {
        use std::os::unix::fs::OpenOptionsExt;
        self.shared.requested.store(true, Ordering::Release);
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.dump);
        match opened {
            Ok(file) => Ok((file, self.dump.clone())),
            Err(e) => {
                // No dump will come: say why at once rather than let the report wait.
                self.finished(Err(format!("cannot create {}: {e}", self.dump.display())));
                Err(e)
            }
        }
    }

    fn on_minidump_created(
        &self,
        result: Result<minidumper::MinidumpBinary, minidumper::Error>,
    ) -> minidumper::LoopAction {
        let outcome = match result {
            Ok(mut binary) => {
                use std::io::Write;
                binary
                    .file
                    .flush()
                    .map(|()| binary.path)
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(format!("minidump-writer: {e}")),
        };
        self.finished(outcome);
        // One crash per worker: the server's work is done.
        minidumper::LoopAction::Exit
    }

    fn on_message(&self, kind: u32, buffer: Vec<u8>) {
        if kind == SIGINFO_MESSAGE {
            if let Some(info) = SigInfo::decode(&buffer) {
                // The first one only: the crash handler sends one, once.
                self.shared
                    .siginfo
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(info);
            }
        }
    }
}

impl Handler {
    /// Hands the dump's outcome to whoever waits for it (once).
    fn finished(&self, outcome: Result<PathBuf, String>) {
        if let Some(tx) = self
            .shared
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = tx.send(outcome);
        }
    }
}

/// Most bytes of a minidump read for analysis (stacks, modules and maps of
/// one process: megabytes at most).
pub const MAX_DUMP_BYTES: u64 = 64 << 20;

/// The dump's bytes, its file removed: nothing of the worker stays in the
/// private worker directory once it is gone.
async fn read_dump(path: &Path) -> Result<Vec<u8>, String> {
    let len = tokio::fs::metadata(path).await.map_or(0, |m| m.len());
    let read = if len > MAX_DUMP_BYTES {
        Err(format!(
            "the minidump is {len} bytes, more than {MAX_DUMP_BYTES}"
        ))
    } else {
        tokio::fs::read(path)
            .await
            .map_err(|e| format!("reading the minidump: {e}"))
    };
    let _ = tokio::fs::remove_file(path).await;
    read
}

/// `si_code` in words: the fault kind, or how another process sent it.
pub fn describe_code(signo: i32, code: i32) -> String {
    let text = match (signo, code) {
        (_, 0) => "sent by kill()",
        (_, -1) => "sent by sigqueue()",
        (_, -6) => "sent by tkill()",
        (_, c) if c < 0 => "sent by a process",
        (libc::SIGSEGV, 1) => "address not mapped",
        (libc::SIGSEGV, 2) => "invalid permissions for a mapped object",
        (libc::SIGBUS, 1) => "invalid address alignment",
        (libc::SIGBUS, 2) => "non-existent physical address",
        (libc::SIGBUS, 3) => "object-specific hardware error",
        (libc::SIGFPE, 1) => "integer divide by zero",
        (libc::SIGFPE, 2) => "integer overflow",
        (libc::SIGFPE, 3) => "floating-point divide by zero",
        (libc::SIGILL, 1) => "illegal opcode",
        (libc::SIGILL, 2) => "illegal operand",
        (libc::SIGILL, 4) => "illegal addressing mode",
        (libc::SIGILL, 5) => "illegal trap",
        (libc::SIGILL, 6) => "privileged opcode",
        (libc::SIGTRAP, 1) => "breakpoint",
        _ => return format!("si_code {code}"),
    };
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signal_origin_survives_the_wire_and_garbage_is_refused() {
        let info = SigInfo {
            signo: 11,
            code: 0,
            pid: 1234,
            uid: 0,
            addr: 0xdead_beef_0000,
        };
        assert_eq!(SigInfo::decode(&info.encode()), Some(info));
        assert_eq!(SigInfo::decode(&[1, 2, 3]), None);
        assert_eq!(SigInfo::decode(&[0; 25]), None);
    }

    #[test]
    fn si_codes_read_as_words() {
        assert_eq!(describe_code(libc::SIGSEGV, 1), "address not mapped");
        assert_eq!(
            describe_code(libc::SIGBUS, 2),
            "non-existent physical address"
        );
        assert_eq!(describe_code(libc::SIGSEGV, 0), "sent by kill()");
        assert_eq!(describe_code(libc::SIGABRT, -6), "sent by tkill()");
        assert_eq!(describe_code(libc::SIGSEGV, 99), "si_code 99");
    }
}
