//! Webhook signatures (src/webhook): mgpass emits them, partners parse them. For any
//! secrets, id, timestamp and body the headers are valid HTTP header values; a receiver
//! that parses `webhook-signature` (space-separated `v1,<base64>`) finds one 32-byte
//! signature per secret, each verifying under that secret; the legacy
//! `x-webhook-signature` is the hex HMAC under the newest. Hostile `webhook-signature`
//! values never make the receiver accept a wrong body.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use mgpass::webhook::{hmac_sha256, signature_headers};

fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// A receiver's check, per the Standard Webhooks spec.
fn receiver_accepts(secret: &str, id: &str, ts: &str, body: &[u8], header: &str) -> bool {
    let mac = hmac_sha256(
        &standard_key(secret),
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    header.split(' ').any(|entry| {
        entry
            .strip_prefix("v1,")
            .and_then(|b| STANDARD.decode(b).ok())
            .is_some_and(|sig| sig == mac)
    })
}

fuzz_target!(|data: &[u8]| {
    // [timestamp 8 bytes] secrets '\n'-separated '\0' id '\0' body '\0' hostile header
    if data.len() < 8 {
        return;
    }
    let ts = i64::from_le_bytes(data[..8].try_into().unwrap());
    let text = String::from_utf8_lossy(&data[8..]);
    let mut parts = text.splitn(4, '\0');
    let secrets: Vec<&str> = parts.next().unwrap_or("").split('\n').collect();
    let id: String = parts
        .next()
        .unwrap_or("msg_1")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let id = if id.is_empty() {
        "msg_1".to_string()
    } else {
        id
    };
    let body = parts.next().unwrap_or("").as_bytes();
    let hostile = parts.next().unwrap_or("");

    let headers = signature_headers(&secrets, &id, ts, body);
    for (name, value) in &headers {
        assert!(
            http::HeaderValue::from_str(value).is_ok(),
            "{name}: {value:?}"
        );
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
            .unwrap()
    };
    let sig = get("webhook-signature");
    assert_eq!(sig.split(' ').count(), secrets.len());
    let ts_s = ts.to_string();
    assert_eq!(get("webhook-timestamp"), ts_s);
    for secret in &secrets {
        assert!(receiver_accepts(secret, &id, &ts_s, body, sig));
    }
    assert_eq!(
        get("x-webhook-signature"),
        mgpass::crypto::hex(&hmac_sha256(secrets.last().unwrap().as_bytes(), &[body]))
    );
    // A different body does not verify under the headers we sent, and a hostile header
    // that is not ours verifies only if it contains one of our signatures.
    let other = [body, b"x"].concat();
    assert!(
        !secrets
            .iter()
            .any(|s| receiver_accepts(s, &id, &ts_s, &other, sig))
    );
    if secrets
        .iter()
        .any(|s| receiver_accepts(s, &id, &ts_s, body, hostile))
    {
        let ours: Vec<&str> = sig.split(' ').collect();
        assert!(
            hostile.split(' ').any(|e| e
                .strip_prefix("v1,")
                .and_then(|b| STANDARD.decode(b).ok())
                .is_some_and(|s| ours
                    .iter()
                    .any(|o| STANDARD.decode(&o[3..]).ok() == Some(s.clone())))),
            "a hostile header verified: {hostile:?}"
        );
    }
});
