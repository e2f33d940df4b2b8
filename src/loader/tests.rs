//! The loader against real files: progress, truncation, shrinking, cancel, residency.

use super::*;
use crate::gguf::GgmlType;
use crate::gguf::writer::GgufWriter;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// A model file with one F32 tensor of `elements` elements.
fn model_file(dir: &tempfile::TempDir, elements: u64) -> PathBuf {
    let path = dir.path().join("m.gguf");
    GgufWriter::new()
        .tensor("t", GgmlType::F32, &[elements])
        .write(&path)
        .unwrap();
    path
}

fn opts() -> LoadOptions {
    LoadOptions {
        mlock: false,
        threads: 3,
        header: HeaderLimits::default(),
    }
}

#[test]
fn loads_and_reports_progress_to_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_file(&dir, 5 << 20);
    let seen = Mutex::new(Vec::new());
    let cancel = AtomicBool::new(false);
    let model = load(std::slice::from_ref(&path), opts(), &cancel, &|p| {
        seen.lock().unwrap().push(p)
    })
    .unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(model.bytes(), len);
    let seen = seen.into_inner().unwrap();
    let last = seen
        .iter()
        .filter(|p| p.phase == Phase::Prefetching)
        .map(|p| p.bytes_done)
        .max();
    assert_eq!(last, Some(len));
    assert_eq!(model.mapping(0).unwrap().len() as u64, len);
}

#[test]
fn a_truncated_file_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_file(&dir, 1 << 20);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(1000).unwrap();
    let err = load(&[path], opts(), &AtomicBool::new(false), &|_| {}).unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err}");
}

/// Loads a 64 MiB model with `threads` readers, cutting the file to 4 KiB
/// at the first progress report that `now` picks.
fn load_shrinking(
    threads: usize,
    now: impl Fn(&Progress) -> bool + Sync,
) -> Result<ResidentModel, LoadError> {
    let dir = tempfile::tempdir().unwrap();
    let path = model_file(&dir, 16 << 20);
    let shrunk = AtomicBool::new(false);
    load(
        std::slice::from_ref(&path),
        LoadOptions { threads, ..opts() },
        &AtomicBool::new(false),
        &|p| {
            if p.phase == Phase::Prefetching && now(&p) && !shrunk.swap(true, Ordering::SeqCst) {
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(4096).unwrap();
            }
        },
    )
}

#[test]
fn a_file_shrinking_mid_load_fails_cleanly() {
    let result = load_shrinking(1, |_| true);
    assert!(
        matches!(result, Err(LoadError::Changed { found: 4096, .. })),
        "{result:?}"
    );
}

#[test]
fn pages_just_read_are_resident_and_a_range_past_the_end_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_file(&dir, 1 << 20);
    let bytes = std::fs::read(&path).unwrap();
    let file = File::open(&path).unwrap();
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(&file) }.unwrap();
    let len = bytes.len() as u64;
    assert!(resident(&map, 0, len));
    assert!(!resident(&map, 0, len + 1));
    assert!(!resident(&map, len + 4096, 1));
}

#[test]
fn cancel_stops_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_file(&dir, 16 << 20);
    let cancel = AtomicBool::new(true);
    let err = load(&[path], opts(), &cancel, &|_| {}).unwrap_err();
    assert!(matches!(err, LoadError::Cancelled));
}

#[test]
fn a_bad_header_fails_as_such_though_the_reads_had_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all_at(b"NOTAGGUF", 0).unwrap();
    let err = load(&[path], opts(), &AtomicBool::new(false), &|_| {}).unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err:?}");
}

#[test]
fn with_several_readers_a_file_shrinking_mid_load_is_changed_not_cancelled() {
    let result = load_shrinking(opts().threads, |p| p.bytes_done > 0);
    assert!(
        matches!(result, Err(LoadError::Changed { found: 4096, .. })),
        "{result:?}"
    );
}

#[test]
fn a_model_without_files_is_an_error() {
    let err = load(&[], opts(), &AtomicBool::new(false), &|_| {}).unwrap_err();
    assert!(
        matches!(&err, LoadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
}

/// Drops `path`'s pages from the page cache (written back first: dirty pages
/// stay). False where they stay anyway (tmpfs).
fn evict(path: &Path) -> bool {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let file = File::open(path).unwrap();
    file.sync_all().unwrap();
    posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(&file) }.unwrap();
    !resident(&map, 0, 4096)
}

/// The two ways a reader reads: `sendfile` to `/dev/null`, and `pread`.
fn sinks() -> [(&'static str, Sink); 2] {
    let splicing = Sink::open();
    assert!(splicing.splices(), "no /dev/null to send to");
    [("sendfile", splicing), ("pread", Sink::copying())]
}

#[test]
fn each_way_of_reading_leaves_a_cold_range_in_the_page_cache() {
    // On disk where we can: /tmp may be a tmpfs, which never evicts.
    let dir = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target"))
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let path = model_file(&dir, 3 << 20);
    let len = std::fs::metadata(&path).unwrap().len();
    for (how, mut sink) in sinks() {
        if !evict(&path) {
            eprintln!("skipped: the page cache keeps {} (tmpfs?)", path.display());
            return;
        }
        let file = File::open(&path).unwrap();
        sink.read(&file, &path, 0, len).unwrap();
        assert_eq!(sink.splices(), how == "sendfile", "{how}: fell back");
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.unwrap();
        assert!(
            resident(&map, 0, len),
            "{how}: not all of the file was read"
        );
    }
}

#[test]
fn each_way_of_reading_calls_a_range_past_the_end_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_file(&dir, 1 << 20);
    let len = std::fs::metadata(&path).unwrap().len();
    let file = File::open(&path).unwrap();
    for (how, mut sink) in sinks() {
        let err = sink.read(&file, &path, len - 100, 4096).unwrap_err();
        assert!(
            matches!(err, LoadError::Changed { expected, found, .. } if expected == len - 100 + 4096 && found == len),
            "{how}: {err:?}"
        );
    }
}
