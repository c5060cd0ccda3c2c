//! The rewards plugin's callback signature check (plugins/rewards/src/signature.rs, a
//! pure module of the guest crate, compiled natively here): `verify` never panics, and
//! accepts a header only if it is the HMAC of this body under this secret, written as
//! hex (either case), optionally `sha256=`-prefixed and surrounded by whitespace.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../plugins/rewards/src/signature.rs"]
mod signature;

fuzz_target!(|data: &[u8]| {
    // secret '\0' body '\0' header
    let mut parts = data.splitn(3, |&b| b == 0);
    let secret = parts.next().unwrap_or(b"");
    let body = parts.next().unwrap_or(b"");
    let header = String::from_utf8_lossy(parts.next().unwrap_or(b""));
    let good = signature::sign(secret, body);
    assert!(signature::verify(secret, body, &good));
    assert!(signature::verify(secret, body, &good.to_uppercase()));
    if signature::verify(secret, body, &header) {
        let h = header.trim();
        let h = h.strip_prefix("sha256=").unwrap_or(h);
        assert!(
            h.trim().eq_ignore_ascii_case(&good),
            "accepted {header:?}, expected {good}"
        );
    }
    // Any edit of a good signature is refused.
    if let Some(&b) = header.as_bytes().first() {
        let mut edited = good.clone().into_bytes();
        let i = b as usize % edited.len();
        let c = edited[i];
        edited[i] = if c == b'0' { b'1' } else { b'0' };
        assert!(!signature::verify(
            secret,
            body,
            std::str::from_utf8(&edited).unwrap()
        ));
    }
});
