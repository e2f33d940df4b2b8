//! Discovery runs in a child process (`llama-router gpu-probe`): GPU runtimes
//! are loaded there, and a driver that hangs or faults costs the daemon only
//! a note ("probe killed by SIGSEGV") and a CPU-only start.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::{Backend, Discovery, ggml, hip, nvml, sysfs};

/// How long the probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Discovery in this process (the probe child's side).
pub fn discover_here() -> Discovery {
    let mut found = Discovery::default();
    match hip::probe() {
        Ok(mut devices) => {
            let archs = sysfs::kfd_archs(Path::new("/sys/class/kfd/kfd/topology/nodes"));
            for (device, arch) in devices.iter_mut().zip(archs) {
                device.arch = Some(arch);
            }
            found.devices.extend(devices);
        }
        Err(e) => found.notes.push(format!("rocm: {e}")),
    }
    match nvml::probe() {
        Ok(devices) => found.devices.extend(devices),
        Err(e) => found.notes.push(format!("cuda: {e}")),
    }
    // sysfs sees the same AMD cards HIP does; it is only the fallback.
    if !found.devices.iter().any(|d| d.backend == Backend::Rocm) {
        match sysfs::probe() {
            Ok(devices) => found.devices.extend(devices),
            Err(e) => found.notes.push(format!("sysfs: {e}")),
        }
    }
    // What llama.cpp will use is what ggml's registry lists.
    let listed = ggml::list();
    if !listed.iter().any(|d| d.backend != "CPU") {
        found.notes.push(format!(
            "ggml: no GPU device in this build's backends ({}){}",
            env!("ROUTER_BUILD_BACKENDS"),
            vulkan_hint()
        ));
    }
    found.devices = ggml::merge(std::mem::take(&mut found.devices), listed);
    found
}

/// Why a Vulkan build may list no device: ggml skips CPU-type Vulkan
/// devices (lavapipe) unless `GGML_VK_VISIBLE_DEVICES` names them.
fn vulkan_hint() -> &'static str {
    if cfg!(feature = "vulkan") && std::env::var_os("GGML_VK_VISIBLE_DEVICES").is_none() {
        "; a software Vulkan device such as lavapipe is used only when GGML_VK_VISIBLE_DEVICES names it"
    } else {
        ""
    }
}

/// Runs `exe gpu-probe` and reads what it found; never fails, never hangs
/// past `timeout`: a probe that does either is a note and zero devices.
pub async fn discover(exe: &Path, timeout: Duration) -> Discovery {
    let failed = |note: String| Discovery {
        devices: Vec::new(),
        notes: vec![note],
    };
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("gpu-probe")
        .env_clear()
        .envs(crate::util::child_env(std::env::vars_os()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => {
            return failed(format!(
                "the GPU probe did not answer within {} s (killed)",
                timeout.as_secs()
            ));
        }
        Ok(Err(e)) => return failed(format!("cannot run the GPU probe: {e}")),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let how = crate::util::describe_exit("GPU probe", output.status);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return failed(format!("{how}; last stderr: {}", tail.join(" | ")));
    }
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| failed(format!("the GPU probe's answer does not parse: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(body: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, path)
    }

    #[tokio::test]
    async fn a_probe_that_crashes_hangs_or_babbles_is_a_note_and_zero_devices() {
        let (_d, crash) = script("echo 'hsa: bad things' >&2; kill -SEGV $$");
        let found = discover(&crash, Duration::from_secs(5)).await;
        assert!(found.devices.is_empty());
        assert!(
            found.notes[0].contains("SIGSEGV") && found.notes[0].contains("hsa: bad things"),
            "{found:?}"
        );

        let (_d, hang) = script("sleep 30");
        let started = std::time::Instant::now();
        let found = discover(&hang, Duration::from_millis(300)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(found.notes[0].contains("did not answer"), "{found:?}");

        let (_d, babble) = script("echo not json");
        assert!(discover(&babble, PROBE_TIMEOUT).await.notes[0].contains("does not parse"));

        let found = discover(Path::new("/nonexistent/llama-router"), PROBE_TIMEOUT).await;
        assert!(found.notes[0].contains("cannot run"));
    }

    #[tokio::test]
    async fn a_good_probe_answer_is_read() {
        let (_d, good) = script(
            r#"echo '{"devices":[{"backend":"cuda","index":0,"name":"H100","arch":"sm_90","total_bytes":100,"free_bytes":60}],"notes":["rocm: none"]}'"#,
        );
        let found = discover(&good, PROBE_TIMEOUT).await;
        assert_eq!(found.devices[0].name, "H100");
        assert_eq!(found.devices[0].backend, Backend::Cuda);
        assert_eq!(found.notes, vec!["rocm: none"]);
    }

    #[test]
    fn discovery_here_never_fails() {
        // Whatever this machine has, discovery answers: devices or reasons.
        let found = discover_here();
        assert!(
            !found.devices.is_empty() || found.notes.len() >= 2,
            "{found:?}"
        );
    }
}
