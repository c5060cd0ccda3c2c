//! Returns a claim the host must refuse: `sub` by default, or the name in config
//! `claim` (to test other registered or un-namespaced names).

use mgpass_plugin_sdk::*;

struct Impostor {
    claim: String,
}

impl Plugin for Impostor {
    fn new(config: &str) -> Result<Self, String> {
        // No JSON parser here: the tests pass either `{}` or `{"claim":"NAME"}`.
        let claim = config
            .split_once("\"claim\":\"")
            .and_then(|(_, rest)| rest.split('"').next())
            .unwrap_or("sub");
        Ok(Impostor {
            claim: claim.to_string(),
        })
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
        Ok(vec![(self.claim.clone(), "\"usr_admin\"".into())])
    }
}

register_plugin!(Impostor);
