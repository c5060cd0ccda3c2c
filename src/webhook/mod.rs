//! Partner webhooks: the envelope, both signature schemes, and the retry schedule.
//!
//! - `X-Webhook-Signature`: hex HMAC-SHA256 of the raw body, keyed with the webhook
//!   secret string (what mgPass partners verify today).
//! - Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` =
//!   `v1,` + base64 HMAC-SHA256 over `id.timestamp.body`, keyed with the base64-decoded
//!   part of the `whsec_…` secret; one signature per live secret during a rotation.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use serde_json::{Value, json};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A new webhook secret in the Standard Webhooks format.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("whsec_{}", STANDARD.encode(bytes))
}

pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The key Standard Webhooks uses: the bytes after `whsec_`, base64-decoded.
fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The delivery body: mgPass's fields plus `id`.
pub fn envelope(id: &str, event_type: &str, data: &Value, created_at: i64) -> Vec<u8> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(created_at.max(0) as u64);
    json!({
        "id": id,
        "event_type": event_type,
        "data": data,
        "timestamp": humantime::format_rfc3339_seconds(time).to_string(),
    })
    .to_string()
    .into_bytes()
}

/// The signature headers for one attempt. `secrets` are the live secrets, newest last.
pub fn signature_headers(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
    ];
    if let Some(newest) = secrets.last() {
        headers.push((
            "x-webhook-signature",
            crate::crypto::hex(&hmac_sha256(newest.as_bytes(), &[body])),
        ));
    }
    let ts = timestamp.to_string();
    let standard: Vec<String> = secrets
        .iter()
        .rev()
        .map(|s| {
            let mac = hmac_sha256(
                &standard_key(s),
                &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
            );
            format!("v1,{}", STANDARD.encode(mac))
        })
        .collect();
    headers.push(("webhook-signature", standard.join(" ")));
    headers.push(("x-webhook-id", id.to_string()));
    headers
}

/// Delay before the attempt after `attempts` failures: about 5 s, 5 min, 30 min, 2 h,
/// 5 h, 10 h, 24 h, with up to 10 % jitter; `None` once the schedule is spent.
pub fn retry_delay_ms(attempts: u32) -> Option<i64> {
    const SCHEDULE_S: [i64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 86_400];
    let base = *SCHEDULE_S.get(attempts.saturating_sub(1) as usize)? * 1000;
    Some(base + rand::rng().random_range(0..=base / 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_rotate() {
        let old = generate_secret();
        let new = generate_secret();
        let body = br#"{"a":1}"#;
        let h = signature_headers(&[&old, &new], "msg_1", 1_700_000_000, body);
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        assert_eq!(
            get("x-webhook-signature"),
            crate::crypto::hex(&hmac_sha256(new.as_bytes(), &[body]))
        );
        let sigs: Vec<String> = get("webhook-signature")
            .split(' ')
            .map(str::to_string)
            .collect();
        assert_eq!(sigs.len(), 2, "both secrets sign during an overlap");
        let expected = STANDARD.encode(hmac_sha256(
            &standard_key(&old),
            &[b"msg_1.1700000000.", body],
        ));
        assert!(sigs.contains(&format!("v1,{expected}")));
    }

    #[test]
    fn schedule_follows_the_published_steps() {
        let first = retry_delay_ms(1).unwrap();
        assert!((5000..=5500).contains(&first));
        assert!((86_400_000..=95_040_000).contains(&retry_delay_ms(7).unwrap()));
        assert_eq!(retry_delay_ms(8), None);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// What a receiver does with `webhook-signature`: split on spaces, take `v1,` entries,
    /// base64-decode them. `None` if any entry is malformed.
    fn parse_signatures(header: &str) -> Option<Vec<Vec<u8>>> {
        header
            .split(' ')
            .map(|e| STANDARD.decode(e.strip_prefix("v1,")?).ok())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// For any secrets (well-formed `whsec_` or not), id, timestamp and body: the
        /// headers are valid HTTP header values, there is one 32-byte standard signature
        /// per secret, newest first, each verifying under its key, and the legacy header
        /// is the hex HMAC under the newest secret.
        #[test]
        fn headers_parse_and_verify(
            secrets in proptest::collection::vec(prop_oneof![
                Just(generate_secret()),
                "whsec_[A-Za-z0-9+/=]{0,20}",
                "\\PC{0,20}",
            ], 1..4),
            id in "[a-zA-Z0-9_]{1,40}",
            timestamp in any::<i64>(),
            body in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let headers = signature_headers(&refs, &id, timestamp, &body);
            for (name, value) in &headers {
                prop_assert!(hyper::header::HeaderValue::from_str(value).is_ok(), "{name}: {value:?}");
            }
            let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
            let sigs = parse_signatures(&get("webhook-signature").unwrap()).expect("well-formed");
            prop_assert_eq!(sigs.len(), secrets.len());
            let ts = timestamp.to_string();
            for (sig, secret) in sigs.iter().zip(secrets.iter().rev()) {
                let mac = hmac_sha256(&standard_key(secret), &[id.as_bytes(), b".", ts.as_bytes(), b".", &body]);
                prop_assert_eq!(sig.as_slice(), mac.as_slice());
            }
            let legacy = get("x-webhook-signature").unwrap();
            prop_assert_eq!(legacy, crate::crypto::hex(&hmac_sha256(secrets.last().unwrap().as_bytes(), &[&body])));
        }

        /// The receiver-side parser never panics on hostile header values.
        #[test]
        fn hostile_signature_headers_do_not_panic(header in "\\PC{0,200}") {
            let _ = parse_signatures(&header);
        }
    }
}
