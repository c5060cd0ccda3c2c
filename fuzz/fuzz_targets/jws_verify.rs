//! JWT/JWS parsing and verification: `KeyRing::verify` never panics and never accepts a
//! token we did not sign. The input is either a raw token, a token we signed with bytes
//! edited, or a forgery (any header JSON naming our kids, any payload and signature).
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use mgpass::keys::{Alg, KeyRing};
use serde_json::json;
use std::sync::OnceLock;

const NOW: i64 = 1_000_000;

struct Fixture {
    ring: KeyRing,
    kids: Vec<String>,
    signed: Vec<String>,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let ring = KeyRing::open(dir.path(), 600, NOW).expect("key ring");
        // A second ES256 key, published but not signing yet: it must verify nothing.
        ring.rotate(NOW, NOW + 10_000).expect("rotate");
        let kids = ring.list(NOW).into_iter().map(|k| k.kid).collect();
        let claims = json!({"sub": "usr_1", "aud": "app", "exp": NOW + 60, "scope": "openid"});
        let signed = [
            (Alg::ES256, "at+jwt"),
            (Alg::RS256, "JWT"),
            (Alg::ES256, ""),
        ]
        .into_iter()
        .map(|(alg, typ)| ring.sign(&claims, typ, alg, NOW).expect("sign"))
        .collect();
        Fixture {
            ring,
            kids,
            signed,
            _dir: dir,
        }
    })
}

fn check(token: &str) {
    let f = fixture();
    if let Ok((_, claims)) = f.ring.verify(token, NOW) {
        assert!(claims.is_object());
        // ECDSA and RSA signatures cover the exact base64url text of header.payload, so
        // an accepted token must carry the signing input of one we issued.
        let input = token.rsplit_once('.').map(|(i, _)| i).unwrap_or("");
        assert!(
            f.signed
                .iter()
                .any(|s| s.rsplit_once('.').map(|(i, _)| i) == Some(input)),
            "accepted a token we did not sign: {token:?}"
        );
        // Not a signing input we issued with a different signature encoding either.
        assert!(
            f.signed.iter().any(|s| s == token),
            "accepted a re-encoded signature: {token:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => check(&String::from_utf8_lossy(rest)),
        1 => {
            // Edits of a signed token: pairs of (position, byte).
            let Some((&which, edits)) = rest.split_first() else {
                return;
            };
            let mut t = f.signed[which as usize % f.signed.len()]
                .clone()
                .into_bytes();
            for e in edits.chunks_exact(3) {
                let at = u16::from_le_bytes([e[0], e[1]]) as usize;
                if at < t.len() {
                    t[at] = e[2];
                } else if at % 2 == 0 {
                    t.push(e[2]);
                } else if !t.is_empty() {
                    t.truncate(at % t.len());
                }
            }
            check(&String::from_utf8_lossy(&t));
        }
        _ => {
            // A forgery: [alg selector, kid selector, header-extra len, header-extra...,
            // payload len, payload..., signature...]
            if rest.len() < 3 {
                return;
            }
            let algs = [
                "none", "HS256", "ES256", "RS256", "ES384", "PS256", "EdDSA", "",
            ];
            let alg = algs[rest[0] as usize % algs.len()];
            let kid = &f.kids[rest[1] as usize % f.kids.len()];
            let n = (rest[2] as usize).min(rest.len() - 3);
            let extra = String::from_utf8_lossy(&rest[3..3 + n]);
            let tail = &rest[3 + n..];
            let m = tail
                .first()
                .map(|&m| (m as usize).min(tail.len() - 1))
                .unwrap_or(0);
            let (payload, sig) = if tail.is_empty() {
                (&[][..], &[][..])
            } else {
                (&tail[1..1 + m], &tail[1 + m..])
            };
            let header = match serde_json::from_str::<serde_json::Value>(&extra) {
                Ok(serde_json::Value::Object(mut map)) => {
                    map.entry("alg").or_insert(json!(alg));
                    map.entry("kid").or_insert(json!(kid));
                    serde_json::Value::Object(map).to_string()
                }
                _ => json!({"alg": alg, "kid": kid, "typ": "JWT"}).to_string(),
            };
            let token = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(sig)
            );
            check(&token);
        }
    }
});
