use std::time::{Duration, SystemTime};

use super::*;

fn facts(pid: u32, at_secs: u64) -> CrashFacts {
    CrashFacts {
        model: "gemma".into(),
        files: vec!["/models/gemma.gguf".into()],
        worker_pid: pid,
        settings: ModelParams::default(),
        exit: CrashExit {
            signal: Some(libc::SIGSEGV),
            signal_name: Some("SIGSEGV".into()),
            core_dumped: false,
            code: None,
            reason: "worker killed by SIGSEGV".into(),
        },
        stderr: (0..100).map(|i| format!("line {i}")).collect(),
        requests: Vec::new(),
        devices: vec!["cpu:0 (host), cpu".into()],
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(at_secs),
    }
}

#[test]
fn a_report_names_its_time_and_keeps_the_last_stderr_lines() {
    let report = CrashReport::from_facts(facts(4242, 1_796_000_000));
    assert_eq!(report.time, "2026-11-30T00:53:20Z");
    assert_eq!(report.id, "20261130T005320Z-4242");
    assert_eq!(report.stderr.len(), STDERR_LINES);
    assert_eq!(report.stderr.first().map(String::as_str), Some("line 36"));
    assert!(report.build.starts_with("llama-router "));
    assert!(report.capture.contains("not captured in the worker"));
}

#[test]
fn fault_signals_and_panics_are_crashes_a_kill_is_not() {
    let mut exit = facts(1, 0).exit;
    assert!(exit.is_crash());
    exit.signal = Some(libc::SIGKILL);
    assert!(
        !exit.is_crash(),
        "SIGKILL comes from outside (OOM killer, operator)"
    );
    exit.signal = None;
    exit.code = Some(PANIC_EXIT_CODE);
    assert!(exit.is_crash());
    exit.code = Some(3);
    assert!(!exit.is_crash());
}

#[test]
fn reports_are_stored_private_listed_newest_first_and_read_back() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = CrashStore::open(dir.path().join("state/crashes"), CrashLimits::default()).unwrap();
    let old = CrashReport::from_facts(facts(1, 1_000));
    let new = CrashReport::from_facts(facts(2, 2_000));
    store.write(&old).unwrap();
    store.write(&new).unwrap();
    let ids: Vec<String> = store.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, [new.id.clone(), old.id.clone()]);
    assert_eq!(store.get(&old.id).unwrap(), old);
    let meta = std::fs::metadata(store.dir()).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700);
    let file = std::fs::metadata(store.dir().join(format!("{}.json", old.id))).unwrap();
    assert_eq!(file.mode() & 0o777, 0o600);
    // Reopened (a restart): still there.
    let again = CrashStore::open(store.dir().to_path_buf(), CrashLimits::default()).unwrap();
    assert_eq!(again.list().unwrap().len(), 2);
}

#[test]
fn storage_rotates_at_its_count_and_byte_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let limits = CrashLimits {
        max_reports: 3,
        max_bytes: u64::MAX,
    };
    let store = CrashStore::open(dir.path().join("c"), limits).unwrap();
    for i in 0..5u32 {
        store
            .write(&CrashReport::from_facts(facts(i, 1_000 + u64::from(i))))
            .unwrap();
    }
    let pids: Vec<u32> = store.list().unwrap().iter().map(|r| r.worker_pid).collect();
    assert_eq!(pids, [4, 3, 2], "the oldest went first");

    let one = serde_json::to_vec_pretty(&CrashReport::from_facts(facts(0, 0)))
        .unwrap()
        .len();
    let limits = CrashLimits {
        max_reports: 100,
        max_bytes: u64::try_from(one * 2 + one / 2).unwrap(),
    };
    let store = CrashStore::open(dir.path().join("b"), limits).unwrap();
    for i in 0..4u32 {
        store
            .write(&CrashReport::from_facts(facts(i, 1_000 + u64::from(i))))
            .unwrap();
    }
    assert_eq!(
        store.list().unwrap().len(),
        2,
        "two reports fit in 2.5 reports' bytes"
    );
}

#[test]
fn an_id_cannot_leave_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = CrashStore::open(dir.path().join("c"), CrashLimits::default()).unwrap();
    for bad in ["../etc/passwd", "", "a/b", "x.json", &"9".repeat(200)] {
        assert!(
            matches!(store.get(bad), Err(CrashError::BadId(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        store.get("20260101T000000Z-1"),
        Err(CrashError::NotFound(_))
    ));
}

#[test]
fn a_directory_others_may_write_to_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("c");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(matches!(
        CrashStore::open(open, CrashLimits::default()),
        Err(CrashError::Dir(_))
    ));
}

fn sig(code: i32, pid: u32, addr: u64) -> Captured {
    Captured {
        minidump: Some(Err("no dump in this test".into())),
        siginfo: Some(SigInfo {
            signo: 6,
            code,
            pid,
            uid: 0,
            addr,
        }),
    }
}

#[test]
fn how_the_signal_came_reads_in_words_and_only_a_fault_has_an_address() {
    // abort() in the worker: raised by itself, no sender, no fault address.
    let own = CrashReport::from_facts(facts(4242, 0)).with_capture(&sig(-6, 4242, 0), None);
    assert_eq!(
        own.signal_detail.as_deref(),
        Some("raised by the worker itself (abort or raise)")
    );
    assert!(own.sender.is_none() && own.fault.is_none());
    assert!(
        own.capture
            .starts_with("capture failed (no dump in this test)"),
        "{}",
        own.capture
    );
    // kill from another process: the sender, still no fault address.
    let sent = CrashReport::from_facts(facts(4242, 0)).with_capture(&sig(0, 1, 0), None);
    assert_eq!(sent.sender.as_ref().map(|s| s.pid), Some(1));
    assert!(
        sent.signal_detail
            .unwrap()
            .starts_with("sent by kill(): sent by pid 1 (uid 0")
    );
    assert!(sent.fault.is_none());
    // A fault: its address.
    let fault = CrashReport::from_facts(facts(4242, 0)).with_capture(&sig(2, 0, 0x1000), None);
    assert_eq!(fault.fault.map(|f| f.address), Some("0x1000".to_owned()));
    // Nothing captured at all: said so.
    let none = CrashReport::from_facts(facts(4242, 0)).with_capture(&Captured::default(), None);
    assert!(
        none.capture.contains("asked for no minidump"),
        "{}",
        none.capture
    );
}
