//! Small helpers every layer may use: they import nothing of the crate.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::Signal;

/// Milliseconds since the Unix epoch (0 before it, `u64::MAX` past 584 million years).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Bytes in the largest fitting binary unit (`253.1 MiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("B");
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {name}")
    }
}

/// The environment a child (a worker, the GPU probe) gets: nothing inherited by accident. Never
/// `NOTIFY_SOCKET` (only the daemon talks to systemd), `LISTEN_*`,
/// `JOURNAL_STREAM` (its stderr is a pipe to us) or our own config variables.
pub fn child_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    const KEEP: &[&str] = &[
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TZ",
        "TMPDIR",
        "LD_LIBRARY_PATH",
        "RUST_BACKTRACE",
        "RUST_LIB_BACKTRACE",
        // Mesa's shader cache lives under it by default.
        "XDG_CACHE_HOME",
        "AMD_VULKAN_ICD",
    ];
    // GPU runtimes read their settings from these: CUDA, HIP/ROCm, ggml,
    // OpenMP, the Vulkan loader (VK_ICD_FILENAMES), Mesa and RADV.
    const KEEP_PREFIXES: &[&str] = &[
        "CUDA_", "HIP_", "ROCR_", "ROCBLAS_", "HSA_", "GGML_", "OMP_", "GPU_", "VK_", "MESA_",
        "RADV_",
    ];
    vars.into_iter()
        .filter(|(name, _)| {
            let name = name.to_string_lossy();
            KEEP.contains(&name.as_ref()) || KEEP_PREFIXES.iter().any(|p| name.starts_with(p))
        })
        .collect()
}

/// How `program` ("worker", "GPU probe") ended, in words.
pub fn describe_exit(program: &str, status: ExitStatus) -> String {
    if let Some(signal) = status.signal() {
        return describe_signal(program, signal, status.core_dumped());
    }
    match status.code() {
        Some(code) => format!("{program} exited with code {code}"),
        None => format!("{program} ended"),
    }
}

/// The name of signal number `signal` (`SIGSEGV`), if it has one.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    Signal::try_from(signal).ok().map(Signal::as_str)
}

/// `program` killed by `signal`, in words (`worker killed by SIGSEGV (core dumped)`).
pub fn describe_signal(program: &str, signal: i32, core_dumped: bool) -> String {
    let name = signal_name(signal).map_or_else(|| format!("signal {signal}"), str::to_owned);
    let core = if core_dumped { " (core dumped)" } else { "" };
    let hint = if signal == libc::SIGKILL {
        " (by the out-of-memory killer or an operator)"
    } else {
        ""
    };
    format!("{program} killed by {name}{core}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_keeps_only_the_environment_it_needs() {
        let vars = [
            ("PATH", "/usr/bin"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("LISTEN_FDS", "2"),
            ("JOURNAL_STREAM", "8:123"),
            ("LLAMA_ROUTER_MODELS_MAX", "2"),
            ("RUST_LOG", "trace"),
            ("CUDA_VISIBLE_DEVICES", "1"),
            ("HIP_VISIBLE_DEVICES", "0"),
            ("RUST_BACKTRACE", "full"),
        ];
        let kept = child_env(
            vars.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        let names: Vec<String> = kept
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "PATH",
                "CUDA_VISIBLE_DEVICES",
                "HIP_VISIBLE_DEVICES",
                "RUST_BACKTRACE"
            ]
        );
    }

    #[test]
    fn exits_are_described_in_words() {
        assert_eq!(
            describe_exit("worker", ExitStatus::from_raw(libc::SIGSEGV)),
            "worker killed by SIGSEGV"
        );
        assert_eq!(
            describe_exit("worker", ExitStatus::from_raw(libc::SIGABRT | 0x80)),
            "worker killed by SIGABRT (core dumped)"
        );
        assert!(
            describe_exit("worker", ExitStatus::from_raw(libc::SIGKILL))
                .starts_with("worker killed by SIGKILL")
        );
        assert_eq!(
            describe_exit("worker", ExitStatus::from_raw(3 << 8)),
            "worker exited with code 3"
        );
    }

    #[test]
    fn bytes_are_shown_in_the_largest_fitting_unit() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(253 << 20), "253.0 MiB");
    }
}
