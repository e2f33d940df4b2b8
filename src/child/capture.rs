//! The worker's end of crash capture: crash-handler's signal handlers
//! (SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGTRAP, on an alternate
//! stack) tell the daemon's capture server who sent the signal and ask it
//! for a minidump, then let the signal kill the worker as it would have.
//! Nothing in the handler allocates or locks: it sends fixed-size messages
//! on a socket opened at start-up.
#![allow(unsafe_code)]

use std::path::Path;

use crate::crashes::SigInfo;
use crate::crashes::capture::SIGINFO_MESSAGE;

/// Capture set up; the handlers stay installed while this lives.
pub struct Capture {
    _handler: crash_handler::CrashHandler,
}

/// Connects to the daemon's capture server at `socket` and installs the
/// handlers; the daemon (our parent) may then ptrace this process.
pub fn install(socket: &Path) -> Result<Capture, String> {
    let name = socket
        .to_str()
        .ok_or_else(|| format!("the crash capture socket {} is not UTF-8", socket.display()))?;
    let client =
        minidumper::Client::with_name(minidumper::SocketName::path(name)).map_err(|e| {
            format!(
                "cannot reach the crash capture socket {}: {e}",
                socket.display()
            )
        })?;
    // SAFETY: the closure runs in a signal handler. It only reads the crash
    // context, encodes it into a stack buffer and makes send/recv system calls
    // on a socket connected above: no allocation, no lock.
    let event = unsafe {
        crash_handler::make_crash_event(move |context: &crash_handler::CrashContext| {
            // crash-handler 0.8 copies the kernel's siginfo_t bytes into a
            // signalfd_siginfo, whose fields lie elsewhere: read them where
            // siginfo_t has them. On LP64 Linux its union starts at byte 16
            // (ssi_uid here): si_pid then si_uid for a sent signal (ssi_uid,
            // ssi_fd), si_addr (both, as one u64) for a fault.
            let si = &context.siginfo;
            let low = u64::from(si.ssi_uid);
            let high = u64::from(si.ssi_fd as u32);
            let info = SigInfo {
                signo: si.ssi_signo,
                code: si.ssi_code,
                pid: si.ssi_uid,
                uid: si.ssi_fd as u32,
                addr: low | (high << 32),
            };
            let _ = client.send_message(SIGINFO_MESSAGE, info.encode());
            crash_handler::CrashEventResult::Handled(client.request_dump(context).is_ok())
        })
    };
    let handler = crash_handler::CrashHandler::attach(event)
        .map_err(|e| format!("cannot install the crash handlers: {e}"))?;
    // Yama (ptrace_scope 1) lets only ancestors attach; say so explicitly for the daemon.
    handler.set_ptracer(Some(std::os::unix::process::parent_id()));
    Ok(Capture { _handler: handler })
}
