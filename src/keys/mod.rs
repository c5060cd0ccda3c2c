//! Signing keys: ES256 (P-256) for every token by default, one RS256 key for relying
//! parties that ask for it (OIDC Core §15.1). PEM files in `keys_dir` (mode 0600) with a
//! manifest `keys.json`; `kid` is the RFC 7638 JWK thumbprint.
//!
//! Rotation: a new ES256 key is published in JWKS at once and signs from its
//! `activate_at`; the key it replaces stays published until every token it could have
//! signed has expired (`max_token_ttl` after the successor's activation), then leaves.

use crate::crypto::{b64url, sha256};
use josekit::jwk::KeyPair;
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
use josekit::jwk::alg::rsa::RsaKeyPair;
use josekit::jws::{ES256, JwsHeader, JwsSigner, JwsVerifier, RS256};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alg {
    ES256,
    RS256,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyMeta {
    pub kid: String,
    pub alg: Alg,
    pub created_at: i64,
    pub activate_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, not signing yet.
    Next,
    /// Signing.
    Active,
    /// Superseded; published until its last token expires.
    Retiring,
    /// No longer published.
    Retired,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: Alg,
    pub created_at: i64,
    pub activate_at: i64,
    pub state: KeyState,
}

struct LoadedKey {
    meta: KeyMeta,
    signer: Box<dyn JwsSigner>,
    verifier: Box<dyn JwsVerifier>,
    public_jwk: Value,
}

/// The provider's keys. Cheap to read from many threads; rotation takes a write lock.
pub struct KeyRing {
    dir: PathBuf,
    max_token_ttl: i64,
    keys: RwLock<Vec<LoadedKey>>,
}

const MANIFEST: &str = "keys.json";

fn file_err(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn pem_path(dir: &Path, meta: &KeyMeta) -> PathBuf {
    let prefix = match meta.alg {
        Alg::ES256 => "es256",
        Alg::RS256 => "rs256",
    };
    dir.join(format!("{prefix}-{}.pem", meta.kid))
}

/// RFC 7638 §3: SHA-256 over the required members in lexicographic order, no spaces.
fn thumbprint(public_jwk: &Value) -> String {
    let canonical = match public_jwk["kty"].as_str() {
        Some("EC") => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            public_jwk["crv"].as_str().unwrap_or_default(),
            public_jwk["x"].as_str().unwrap_or_default(),
            public_jwk["y"].as_str().unwrap_or_default()
        ),
        _ => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            public_jwk["e"].as_str().unwrap_or_default(),
            public_jwk["n"].as_str().unwrap_or_default()
        ),
    };
    b64url(&sha256(canonical.as_bytes()))
}

fn public_jwk_of(alg: Alg, pem: &[u8]) -> Result<Value, KeyError> {
    let jwk = match alg {
        Alg::ES256 => EcKeyPair::from_pem(pem, Some(EcCurve::P256))
            .map_err(|e| KeyError::Invalid(e.to_string()))?
            .to_jwk_public_key(),
        Alg::RS256 => RsaKeyPair::from_pem(pem)
            .map_err(|e| KeyError::Invalid(e.to_string()))?
            .to_jwk_public_key(),
    };
    serde_json::to_value(jwk.as_ref()).map_err(|e| KeyError::Invalid(e.to_string()))
}

fn load_key(dir: &Path, meta: KeyMeta) -> Result<LoadedKey, KeyError> {
    let path = pem_path(dir, &meta);
    let pem = std::fs::read(&path).map_err(|e| file_err(&path, e))?;
    let mut public_jwk = public_jwk_of(meta.alg, &pem).map_err(|e| file_err(&path, e))?;
    if thumbprint(&public_jwk) != meta.kid {
        return Err(file_err(&path, "key does not match its kid"));
    }
    let (signer, verifier): (Box<dyn JwsSigner>, Box<dyn JwsVerifier>) = match meta.alg {
        Alg::ES256 => (
            Box::new(
                ES256
                    .signer_from_pem(&pem)
                    .map_err(|e| file_err(&path, e))?,
            ),
            Box::new(
                ES256
                    .verifier_from_jwk(&jwk_from(&public_jwk)?)
                    .map_err(|e| file_err(&path, e))?,
            ),
        ),
        Alg::RS256 => (
            Box::new(
                RS256
                    .signer_from_pem(&pem)
                    .map_err(|e| file_err(&path, e))?,
            ),
            Box::new(
                RS256
                    .verifier_from_jwk(&jwk_from(&public_jwk)?)
                    .map_err(|e| file_err(&path, e))?,
            ),
        ),
    };
    if let Value::Object(map) = &mut public_jwk {
        map.insert("kid".into(), json!(meta.kid));
        map.insert("use".into(), json!("sig"));
        map.insert("alg".into(), json!(meta.alg.name()));
    }
    Ok(LoadedKey {
        meta,
        signer,
        verifier,
        public_jwk,
    })
}

fn jwk_from(value: &Value) -> Result<josekit::jwk::Jwk, KeyError> {
    let map = value
        .as_object()
        .cloned()
        .ok_or_else(|| KeyError::Invalid("JWK is not an object".into()))?;
    josekit::jwk::Jwk::from_map(map).map_err(|e| KeyError::Invalid(e.to_string()))
}

fn generate(dir: &Path, alg: Alg, now: i64, activate_at: i64) -> Result<KeyMeta, KeyError> {
    let pem = match alg {
        Alg::ES256 => EcKeyPair::generate(EcCurve::P256)
            .map_err(|e| KeyError::Invalid(e.to_string()))?
            .to_pem_private_key(),
        Alg::RS256 => RsaKeyPair::generate(2048)
            .map_err(|e| KeyError::Invalid(e.to_string()))?
            .to_pem_private_key(),
    };
    let meta = KeyMeta {
        kid: thumbprint(&public_jwk_of(alg, &pem)?),
        alg,
        created_at: now,
        activate_at,
    };
    write_private(&pem_path(dir, &meta), &pem)?;
    Ok(meta)
}

/// Writes a private key readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_err(path, e))?;
    f.write_all(bytes).map_err(|e| file_err(path, e))?;
    f.sync_all().map_err(|e| file_err(path, e))
}

fn read_manifest(dir: &Path) -> Result<Vec<KeyMeta>, KeyError> {
    let path = dir.join(MANIFEST);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| file_err(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(file_err(&path, e)),
    }
}

fn write_manifest(dir: &Path, metas: &[KeyMeta]) -> Result<(), KeyError> {
    let path = dir.join(MANIFEST);
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    let bytes = serde_json::to_vec_pretty(metas).map_err(|e| file_err(&path, e))?;
    std::fs::write(&tmp, bytes).map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| file_err(&path, e))
}

impl KeyRing {
    /// Loads the keys in `dir`, generating an ES256 and an RS256 key on first start.
    pub fn open(dir: &Path, max_token_ttl: i64, now: i64) -> Result<KeyRing, KeyError> {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        let mut metas = read_manifest(dir)?;
        let mut changed = false;
        for alg in [Alg::ES256, Alg::RS256] {
            if !metas.iter().any(|m| m.alg == alg) {
                metas.push(generate(dir, alg, now, now)?);
                changed = true;
            }
        }
        if changed {
            write_manifest(dir, &metas)?;
        }
        let keys = metas
            .into_iter()
            .map(|m| load_key(dir, m))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeyRing {
            dir: dir.to_path_buf(),
            max_token_ttl,
            keys: RwLock::new(keys),
        })
    }

    fn state_of(&self, keys: &[LoadedKey], key: &LoadedKey, now: i64) -> KeyState {
        if key.meta.activate_at > now {
            return KeyState::Next;
        }
        // The earliest activated successor of the same algorithm ends this key's term.
        let successor = keys
            .iter()
            .filter(|k| {
                k.meta.alg == key.meta.alg
                    && k.meta.activate_at <= now
                    && (k.meta.activate_at, &k.meta.kid) > (key.meta.activate_at, &key.meta.kid)
            })
            .map(|k| k.meta.activate_at)
            .min();
        match successor {
            None => KeyState::Active,
            Some(at) if now < at + self.max_token_ttl => KeyState::Retiring,
            Some(_) => KeyState::Retired,
        }
    }

    /// Adds a new ES256 key, published at once, signing from `activate_at`.
    pub fn rotate(&self, now: i64, activate_at: i64) -> Result<KeyInfo, KeyError> {
        let meta = generate(&self.dir, Alg::ES256, now, activate_at)?;
        let loaded = load_key(&self.dir, meta.clone())?;
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let mut metas: Vec<KeyMeta> = keys.iter().map(|k| k.meta.clone()).collect();
        metas.push(meta.clone());
        write_manifest(&self.dir, &metas)?;
        keys.push(loaded);
        let state = self.state_of(&keys, keys.last().expect("just pushed"), now);
        Ok(KeyInfo {
            kid: meta.kid,
            alg: meta.alg,
            created_at: meta.created_at,
            activate_at: meta.activate_at,
            state,
        })
    }

    pub fn list(&self, now: i64) -> Vec<KeyInfo> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .map(|k| KeyInfo {
                kid: k.meta.kid.clone(),
                alg: k.meta.alg,
                created_at: k.meta.created_at,
                activate_at: k.meta.activate_at,
                state: self.state_of(&keys, k, now),
            })
            .collect()
    }

    /// The JWKS document: every published public key.
    pub fn jwks(&self, now: i64) -> Value {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let published: Vec<&Value> = keys
            .iter()
            .filter(|k| self.state_of(&keys, k, now) != KeyState::Retired)
            .map(|k| &k.public_jwk)
            .collect();
        json!({ "keys": published })
    }

    /// Signs `claims` as a compact JWS with the active key of `alg`.
    pub fn sign(&self, claims: &Value, typ: &str, alg: Alg, now: i64) -> Result<String, KeyError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let key = keys
            .iter()
            .filter(|k| k.meta.alg == alg && self.state_of(&keys, k, now) == KeyState::Active)
            .max_by_key(|k| k.meta.activate_at)
            .ok_or_else(|| KeyError::Sign(format!("no active {} key", alg.name())))?;
        let mut header = JwsHeader::new();
        header.set_token_type(typ);
        header.set_key_id(key.meta.kid.clone());
        let payload = serde_json::to_vec(claims).map_err(|e| KeyError::Sign(e.to_string()))?;
        josekit::jws::serialize_compact(&payload, &header, key.signer.as_ref())
            .map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// Verifies a compact JWS signed by one of our published keys; returns its `typ` and
    /// claims. Expiry and audience are the caller's to check.
    pub fn verify(&self, token: &str, now: i64) -> Result<(String, Value), KeyError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let (payload, header) = josekit::jws::deserialize_compact_with_selector(token, |h| {
            let kid = h.key_id();
            let alg = h.algorithm();
            Ok(keys
                .iter()
                .find(|k| {
                    Some(k.meta.kid.as_str()) == kid
                        && Some(k.meta.alg.name()) == alg
                        && self.state_of(&keys, k, now) != KeyState::Retired
                })
                .map(|k| k.verifier.as_ref()))
        })
        .map_err(|e| KeyError::Invalid(e.to_string()))?;
        let claims: Value =
            serde_json::from_slice(&payload).map_err(|e| KeyError::Invalid(e.to_string()))?;
        if !claims.is_object() {
            return Err(KeyError::Invalid("claims are not a JSON object".into()));
        }
        Ok((header.token_type().unwrap_or_default().to_string(), claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_generates_and_restart_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), 600, 1000).unwrap();
        let jwks = ring.jwks(1000);
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        let again = KeyRing::open(dir.path(), 600, 2000).unwrap();
        assert_eq!(again.jwks(2000), jwks);
        let mode = std::fs::metadata(pem_path(dir.path(), &ring.keys.read().unwrap()[0].meta))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn rotation_publishes_first_then_signs_then_retires_old() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), 600, 1000).unwrap();
        let old = ring.list(1000)[0].kid.clone();
        let new = ring.rotate(1000, 1100).unwrap();
        assert_eq!(new.state, KeyState::Next);
        assert_eq!(ring.jwks(1000)["keys"].as_array().unwrap().len(), 3);
        let kid_of = |t: &str| {
            josekit::jwt::decode_header(t)
                .unwrap()
                .claim("kid")
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        };
        let t1 = ring.sign(&json!({"a":1}), "JWT", Alg::ES256, 1050).unwrap();
        assert_eq!(kid_of(&t1), old);
        let t2 = ring.sign(&json!({"a":1}), "JWT", Alg::ES256, 1100).unwrap();
        assert_eq!(kid_of(&t2), new.kid);
        // The old key still verifies while its tokens may live, then leaves JWKS.
        assert!(ring.verify(&t1, 1699).is_ok());
        assert!(ring.verify(&t1, 1700).is_err());
        assert_eq!(ring.jwks(1700)["keys"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn tampered_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), 600, 1000).unwrap();
        let t = ring
            .sign(&json!({"sub":"a"}), "at+jwt", Alg::ES256, 1000)
            .unwrap();
        let (typ, claims) = ring.verify(&t, 1000).unwrap();
        assert_eq!(
            (typ.as_str(), claims["sub"].as_str()),
            ("at+jwt", Some("a"))
        );
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = b64url(br#"{"sub":"b"}"#);
        parts[1] = &forged;
        assert!(ring.verify(&parts.join("."), 1000).is_err());
        let rs = ring
            .sign(&json!({"sub":"a"}), "JWT", Alg::RS256, 1000)
            .unwrap();
        assert!(ring.verify(&rs, 1000).is_ok());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::sync::OnceLock;

        /// One ring (RSA generation is slow) and tokens it signed, shared by the cases.
        fn ring() -> &'static (KeyRing, Vec<String>, tempfile::TempDir) {
            static RING: OnceLock<(KeyRing, Vec<String>, tempfile::TempDir)> = OnceLock::new();
            RING.get_or_init(|| {
                let dir = tempfile::tempdir().unwrap();
                let ring = KeyRing::open(dir.path(), 600, 1000).unwrap();
                let tokens = [Alg::ES256, Alg::RS256]
                    .into_iter()
                    .map(|alg| {
                        ring.sign(&json!({"sub": "a", "n": 1}), "JWT", alg, 1000)
                            .unwrap()
                    })
                    .collect();
                (ring, tokens, dir)
            })
        }

        fn header_for(alg: &str, kid: &str) -> String {
            b64url(
                json!({"alg": alg, "kid": kid, "typ": "JWT"})
                    .to_string()
                    .as_bytes(),
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Editing any byte of a signed token makes it unacceptable.
            #[test]
            fn edited_tokens_are_refused(which in 0usize..2, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
                let (ring, tokens, _) = ring();
                let mut t = tokens[which].clone().into_bytes();
                let i = at.index(t.len());
                prop_assume!(t[i] != byte);
                t[i] = byte;
                let t = String::from_utf8_lossy(&t);
                prop_assert!(ring.verify(&t, 1000).is_err(), "{t}");
            }

            /// Forged tokens naming our kids, with any alg and any signature bytes, and
            /// arbitrary strings, are refused.
            #[test]
            fn forgeries_are_refused(
                alg in proptest::sample::select(vec!["none", "HS256", "ES256", "RS256", "ES384", "PS256", ""]),
                which in 0usize..2,
                payload in "\\PC{0,40}",
                sig in proptest::collection::vec(any::<u8>(), 0..300),
                junk in "\\PC{0,80}",
            ) {
                let (ring, _, _) = ring();
                let kid = &ring.list(1000)[which].kid;
                let forged = format!("{}.{}.{}", header_for(alg, kid), b64url(payload.as_bytes()), b64url(&sig));
                prop_assert!(ring.verify(&forged, 1000).is_err());
                prop_assert!(ring.verify(&junk, 1000).is_err());
            }
        }
    }
}
