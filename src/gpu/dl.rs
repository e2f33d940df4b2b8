//! Loading a GPU library at run time, and reading its C strings. Only the
//! probe child process calls these.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};

use libloading::Library;

/// The first of `names` that loads, or the last loader error.
pub fn open_first(names: &[&str]) -> Result<Library, String> {
    let mut last = String::from("no library name given");
    for name in names {
        // SAFETY: loading a GPU runtime runs its initializers; that is what
        // the probe child exists for (a fault there kills only the child).
        match unsafe { Library::new(name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// A C string returned by a library (empty for null).
///
/// # Safety
/// `text` is null or points to a NUL-terminated string that outlives the call.
pub unsafe fn c_text(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: the caller promises a valid NUL-terminated string.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}
