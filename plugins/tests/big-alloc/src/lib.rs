//! Asks for 1 GiB, far over the memory cap.

use mgpass_plugin_sdk::*;
use std::hint::black_box;

struct Hog;

impl Plugin for Hog {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Hog)
    }

    fn registration(&self) -> Registration {
        Registration {
            token_claims: true,
            ..Registration::default()
        }
    }

    fn token_claims(
        &mut self,
        _user: UserInfo,
        _client_id: String,
        _scopes: Vec<String>,
    ) -> Result<Vec<(String, String)>, String> {
        // black_box keeps the optimizer from deleting the allocation.
        let big = black_box(vec![1u8; 1 << 30]);
        Ok(vec![("hog:len".into(), big.len().to_string())])
    }
}

register_plugin!(Hog);
