//! The payout provider's callback signature: `X-Signature` = hex HMAC-SHA256 of the raw
//! body with the configured `callback_secret`, compared in constant time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `header` (hex, either case, optionally `sha256=`-prefixed) is the HMAC of
/// `body` under `secret`.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let header = header.trim();
    let header = header.strip_prefix("sha256=").unwrap_or(header);
    let Some(given) = unhex(header) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time and refuses a wrong length.
    mac.verify_slice(&given).is_ok()
}

/// The signature `verify` accepts (for tests and for documenting the provider's side).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// Lower-case hex SHA-256, for kv keys built from unbounded input.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verifies_and_refuses() {
        let secret = b"provider-secret-0123";
        let body = br#"{"cashback_ID":"cb_1","status":"completed"}"#;
        let good = sign(secret, body);
        assert!(verify(secret, body, &good));
        assert!(verify(secret, body, &good.to_uppercase()));
        assert!(verify(secret, body, &format!("sha256={good}")));
        assert!(!verify(b"another-secret-0123", body, &good));
        assert!(!verify(secret, b"{}", &good));
        assert!(!verify(secret, body, &good[..62]));
        assert!(!verify(secret, body, ""));
        assert!(!verify(secret, body, "zz"));
        let mut flipped = good.into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert!(!verify(
            secret,
            body,
            std::str::from_utf8(&flipped).unwrap()
        ));
    }
}
