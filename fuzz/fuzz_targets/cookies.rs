//! Cookie parsing: never panics; a found value is a trimmed, unquoted slice of the
//! header that followed `name=`; a cookie placed among arbitrary others is found.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mgpass::http::cookies::{SESSION_COOKIE, find};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // [name '\0'] header
    let (name, header) = match text.split_once('\0') {
        Some((n, h)) => (n, h),
        None => (SESSION_COOKIE, text.as_ref()),
    };
    if let Some(v) = find(header, name) {
        let start = v.as_ptr() as usize - header.as_ptr() as usize;
        assert!(start + v.len() <= header.len(), "value outside the header");
        assert!(header[..start].contains(&format!("{name}=")) || v.is_empty());
        assert!(!v.starts_with('"') && !v.ends_with('"'));
        assert!(!v.contains(';'));
        assert!(!name.contains(';') && !name.contains('='));
    }
    // Our cookie after the arbitrary ones is found, unless an earlier one shadows it.
    let appended = format!("{header}; {SESSION_COOKIE}=abc");
    let found = find(&appended, SESSION_COOKIE);
    if find(header, SESSION_COOKIE).is_none() {
        assert_eq!(found, Some("abc"), "{appended:?}");
    }
});
