//! Argon2id password digests.

use crate::config::LoginConfig;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

#[derive(Clone)]
pub struct Passwords {
    argon: Argon2<'static>,
    /// A digest of a random password, verified against when the account does not exist
    /// so that the answer takes as long either way (no user enumeration by timing).
    decoy: String,
}

impl Passwords {
    pub fn new(config: &LoginConfig) -> Result<Passwords, String> {
        let params = Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            None,
        )
        .map_err(|e| format!("login: invalid argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let decoy = argon
            .hash_password(crate::crypto::random_token().as_bytes())
            .map_err(|e| format!("login: argon2: {e}"))?
            .to_string();
        Ok(Passwords { argon, decoy })
    }

    pub fn hash(&self, password: &str) -> Result<String, String> {
        if password.is_empty() {
            return Err("password must not be empty".into());
        }
        self.argon
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| format!("cannot hash password: {e}"))
    }

    /// Checks `password` against a stored digest, or against the decoy when there is no
    /// account, so both cost the same.
    pub fn verify(&self, password: &str, digest: Option<&str>) -> bool {
        let ok = self
            .argon
            .verify_password(password.as_bytes(), digest.unwrap_or(&self.decoy))
            .is_ok();
        ok && digest.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Passwords {
        Passwords::new(&LoginConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..LoginConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn hash_and_verify() {
        let p = cheap();
        let d = p.hash("correct horse").unwrap();
        assert!(d.starts_with("$argon2id$"));
        assert!(p.verify("correct horse", Some(&d)));
        assert!(!p.verify("wrong", Some(&d)));
        assert!(!p.verify("anything", None));
        assert!(p.hash("").is_err());
    }
}
