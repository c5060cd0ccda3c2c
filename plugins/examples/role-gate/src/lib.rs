//! Denies login to one client unless the user holds a role.
//! Config (`[plugins.example-role-gate]`): `client_id`, `role`, optional `message`.

use mgpass_plugin_sdk::*;

struct RoleGate {
    client_id: String,
    role: String,
    message: String,
}

impl Plugin for RoleGate {
    fn new(config: &str) -> Result<Self, String> {
        let config: serde_json::Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
        let text = |key: &str| config.get(key).and_then(|v| v.as_str()).map(str::to_string);
        Ok(RoleGate {
            client_id: text("client_id").ok_or("client_id (a string) is required")?,
            role: text("role").ok_or("role (a string) is required")?,
            message: text("message")
                .unwrap_or_else(|| "Your account may not sign in to this application.".into()),
        })
    }

    fn registration(&self) -> Registration {
        Registration {
            authorize_login: true,
            ..Registration::default()
        }
    }

    fn authorize_login(
        &mut self,
        user: UserInfo,
        client_id: String,
    ) -> Result<LoginDecision, String> {
        if client_id == self.client_id && !user.roles.iter().any(|r| *r == self.role) {
            return Ok(LoginDecision::Deny(self.message.clone()));
        }
        Ok(LoginDecision::Allow)
    }
}

register_plugin!(RoleGate);
