//! Adds a namespaced claim to every token: `example:greeting` = "Hello, <username>!".
//! Config (`[plugins.example-claims]`): `claim` (the claim name), `greeting` (the word).

use mgpass_plugin_sdk::*;

struct Greeting {
    claim: String,
    greeting: String,
}

impl Plugin for Greeting {
    fn new(config: &str) -> Result<Self, String> {
        let config: serde_json::Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
        let text = |key: &str, default: &str| match config.get(key) {
            None => Ok(default.to_string()),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{key} must be a string")),
        };
        Ok(Greeting {
            claim: text("claim", "example:greeting")?,
            greeting: text("greeting", "Hello")?,
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
        user: UserInfo,
        _client_id: String,
        _scopes: Vec<String>,
    ) -> Result<Vec<(String, String)>, String> {
        let value = serde_json::Value::String(format!("{}, {}!", self.greeting, user.username));
        Ok(vec![(self.claim.clone(), value.to_string())])
    }
}

register_plugin!(Greeting);
