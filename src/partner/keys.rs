//! Partner API keys: `pk_live_` + 256 random bits in base62 + a 6-character checksum, so
//! a secret scanner can tell a real key from a look-alike without asking the server.

use crate::crypto::sha256;
use rand::RngExt;

pub const PREFIX: &str = "pk_live_";
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// 256 bits need 43 base62 digits.
const BODY_LEN: usize = 43;
const CHECK_LEN: usize = 6;

/// Big-endian bytes to base62, left-padded to `width` digits.
fn base62(bytes: &[u8], width: usize) -> String {
    let mut digits = Vec::new();
    let mut num: Vec<u8> = bytes.to_vec();
    while num.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in num.iter_mut() {
            let acc = (rem << 8) | *b as u32;
            *b = (acc / 62) as u8;
            rem = acc % 62;
        }
        digits.push(ALPHABET[rem as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

fn checksum(body: &str) -> String {
    let digest = sha256(format!("{PREFIX}{body}").as_bytes());
    base62(&digest[..4], CHECK_LEN)
}

/// A fresh key; show it once and store only its digest.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    let body = base62(&bytes, BODY_LEN);
    format!("{PREFIX}{body}{}", checksum(&body))
}

/// Whether `key` has the shape and checksum of a real key (says nothing about whether
/// it is issued).
pub fn well_formed(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(PREFIX) else {
        return false;
    };
    if rest.len() != BODY_LEN + CHECK_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (body, check) = rest.split_at(BODY_LEN);
    crate::crypto::constant_time_eq(checksum(body).as_bytes(), check.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = generate();
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 49, "{a}");
        assert!(well_formed(&a));
        assert_ne!(a, generate());
    }

    #[test]
    fn look_alikes_fail_the_checksum() {
        let key = generate();
        let mut flipped = key.clone().into_bytes();
        let last = flipped.len() - 10;
        flipped[last] = if flipped[last] == b'a' { b'b' } else { b'a' };
        assert!(!well_formed(&String::from_utf8(flipped).unwrap()));
        assert!(!well_formed("pk_live_your_api_key_here"));
        assert!(!well_formed(&key.replace("pk_live_", "pk_test_")));
    }

    #[test]
    fn base62_is_positional() {
        assert_eq!(base62(&[0, 61], 2), "0z");
        assert_eq!(base62(&[0, 62], 2), "10");
    }
}
