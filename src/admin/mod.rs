//! Operator commands: one implementation, reached either directly (server stopped: the
//! CLI opens the store itself) or through the local admin socket (server running).

pub mod socket;

use crate::app::App;
use crate::crypto::{random_token, sha256_hex};
use crate::partner;
use crate::store::{Client, IdTokenAlg, StoreError, User};
use crate::types::{ClientId, RedirectUri, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A command as it travels over the socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    ClientAdd(NewClient),
    ClientList,
    ClientShow {
        id: String,
    },
    ClientRemove {
        id: String,
    },
    UserAdd(NewUser),
    UserList,
    UserShow {
        user: String,
    },
    UserRemove {
        user: String,
    },
    UserSetPassword {
        user: String,
        password: String,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    UserLogout {
        user: String,
    },
    KeysRotate {
        now: bool,
    },
    KeysList,
    PartnerAdd(crate::partner::PartnerSpec),
    PartnerList,
    PartnerShow {
        id: String,
    },
    PartnerUpdate {
        id: String,
        spec: crate::partner::PartnerSpec,
    },
    PartnerRotateKey {
        id: String,
        overlap_secs: Option<u64>,
    },
    PartnerRotateWebhookSecret {
        id: String,
        overlap_secs: Option<u64>,
    },
    PluginList,
    PluginReload,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Secret {
    Given(String),
    Generate,
    Public,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewClient {
    pub id: String,
    pub secret: Secret,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    pub backchannel_logout_session_required: bool,
    pub name: Option<String>,
    pub first_party: bool,
    pub id_token_alg: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewUser {
    pub username: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub password: String,
}

/// Why a command failed: bad input (exit code 2, nothing written) or a failure of the
/// store (exit code 1).
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(m) => AdminError::Invalid(m),
            other => AdminError::Failed(other.to_string()),
        }
    }
}

impl From<crate::http::Error> for AdminError {
    fn from(e: crate::http::Error) -> Self {
        match e {
            crate::http::Error::Internal(m) => AdminError::Failed(m),
            crate::http::Error::Api { message, .. } => AdminError::Invalid(message),
            other => AdminError::Invalid(other.to_string()),
        }
    }
}

fn invalid(m: impl Into<String>) -> AdminError {
    AdminError::Invalid(m.into())
}

fn client_view(c: &Client) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "type": if c.is_public() { "public" } else { "confidential" },
        "redirect_uris": c.redirect_uris,
        "post_logout_redirect_uris": c.post_logout_redirect_uris,
        "backchannel_logout_uri": c.backchannel_logout_uri,
        "backchannel_logout_session_required": c.backchannel_logout_session_required,
        "first_party": c.first_party,
        "id_token_signed_response_alg": match c.id_token_alg { IdTokenAlg::ES256 => "ES256", IdTokenAlg::RS256 => "RS256" },
        "created_at": c.created_at,
    })
}

fn user_view(u: &User) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "name": u.name,
        "roles": u.roles,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
    })
}

fn parse_uris(uris: &[String]) -> Result<Vec<RedirectUri>, AdminError> {
    uris.iter()
        .map(|u| RedirectUri::parse(u).map_err(invalid))
        .collect()
}

/// Finds a user by id, username or email.
fn find_user(app: &App, user: &str) -> Result<User, AdminError> {
    if let Some(u) = app.store.user(&UserId(user.to_string()))? {
        return Ok(u);
    }
    app.store
        .user_by_login(user)?
        .ok_or_else(|| invalid(format!("no user {user:?}")))
}

fn validate_username(name: &str) -> Result<(), AdminError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || "._-".contains(c))
    {
        return Err(invalid(
            "username must be 1-64 letters, digits, '.', '_' or '-'",
        ));
    }
    Ok(())
}

fn validate_email(email: &str) -> Result<(), AdminError> {
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !email.contains(char::is_whitespace);
    if !ok {
        return Err(invalid(format!("{email:?} is not an email address")));
    }
    Ok(())
}

fn hash_password(app: &App, password: &str) -> Result<String, AdminError> {
    app.passwords.hash(password).map_err(invalid)
}

fn plugin_view(status: &crate::plugin::PluginStatus) -> Value {
    use crate::plugin::PluginState;
    let mut v = json!({"name": status.name, "source": status.source});
    match &status.state {
        PluginState::Loaded {
            hooks,
            routes,
            paused_for_ms,
        } => {
            v["state"] = json!(if paused_for_ms.is_some() {
                "paused"
            } else {
                "loaded"
            });
            v["hooks"] = json!(hooks);
            v["routes"] = json!(routes);
            v["paused_for_ms"] = json!(paused_for_ms);
        }
        PluginState::Disabled => v["state"] = json!("disabled"),
        PluginState::Failed(reason) => {
            v["state"] = json!("failed");
            v["error"] = json!(reason);
        }
    }
    v
}

/// Loads every plugin again, with the plugin sections of the config file as it is now.
/// New versions take calls once loaded; calls in flight finish on the old ones.
pub async fn reload_plugins(app: &App) -> Result<Value, AdminError> {
    let config = match &app.config.source {
        Some(path) => {
            crate::config::Config::load(path, true).map_err(|e| invalid(e.to_string()))?
        }
        None => app.config.clone(),
    };
    let statuses = app
        .plugins
        .reload(&config)
        .await
        .map_err(|e| AdminError::Failed(e.to_string()))?;
    for s in &statuses {
        tracing::info!(plugin = %s.name, state = ?s.state, "plugin reloaded");
    }
    Ok(json!(statuses.iter().map(plugin_view).collect::<Vec<_>>()))
}

/// Executes one command.
pub async fn execute(app: &App, command: Command) -> Result<Value, AdminError> {
    let now = app.clock.now();
    let result = match command {
        Command::ClientAdd(new) => {
            let id = ClientId::parse(&new.id).map_err(invalid)?;
            if new.redirect_uris.is_empty() {
                return Err(invalid("at least one --redirect-uri is required"));
            }
            let redirect_uris = parse_uris(&new.redirect_uris)?;
            let post_logout_redirect_uris = parse_uris(&new.post_logout_redirect_uris)?;
            let backchannel_logout_uri = new
                .backchannel_logout_uri
                .as_deref()
                .map(RedirectUri::parse)
                .transpose()
                .map_err(invalid)?;
            let id_token_alg = match new.id_token_alg.as_deref() {
                None | Some("ES256") => IdTokenAlg::ES256,
                Some("RS256") => IdTokenAlg::RS256,
                Some(other) => return Err(invalid(format!("unsupported id token alg {other:?}"))),
            };
            let (secret_digest, shown) = match new.secret {
                Secret::Public => (None, None),
                Secret::Given(s) if s.len() < 16 => {
                    return Err(invalid("client secret must be at least 16 characters"));
                }
                Secret::Given(s) => (Some(sha256_hex(s.as_bytes())), None),
                Secret::Generate => {
                    let s = random_token();
                    (Some(sha256_hex(s.as_bytes())), Some(s))
                }
            };
            let client = Client {
                name: new.name.unwrap_or_else(|| id.to_string()),
                id,
                secret_digest,
                redirect_uris,
                post_logout_redirect_uris,
                backchannel_logout_uri,
                backchannel_logout_session_required: new.backchannel_logout_session_required,
                first_party: new.first_party,
                id_token_alg,
                created_at: now,
            };
            app.store.insert_client(&client)?;
            let mut view = client_view(&client);
            if let Some(s) = shown {
                view["client_secret"] = json!(s);
            }
            view
        }
        Command::ClientList => json!(
            app.store
                .clients()?
                .iter()
                .map(client_view)
                .collect::<Vec<_>>()
        ),
        Command::ClientShow { id } => {
            let id = ClientId::parse(&id).map_err(invalid)?;
            client_view(
                &app.store
                    .client(&id)?
                    .ok_or_else(|| invalid(format!("no client {:?}", id.as_str())))?,
            )
        }
        Command::ClientRemove { id } => {
            let id = ClientId::parse(&id).map_err(invalid)?;
            if !app.store.remove_client(&id)? {
                return Err(invalid(format!("no client {:?}", id.as_str())));
            }
            json!({"removed": id})
        }
        Command::UserAdd(new) => {
            validate_username(&new.username)?;
            if let Some(e) = &new.email {
                validate_email(e)?;
            }
            let user = User {
                id: UserId::generate(),
                username: new.username,
                email: new.email,
                name: new.name,
                roles: new.roles,
                password_hash: hash_password(app, &new.password)?,
                created_at: now,
                updated_at: now,
            };
            app.store.insert_user(&user)?;
            user_view(&user)
        }
        Command::UserList => json!(app.store.users()?.iter().map(user_view).collect::<Vec<_>>()),
        Command::UserShow { user } => user_view(&find_user(app, &user)?),
        Command::UserRemove { user } => {
            let user = find_user(app, &user)?;
            app.store.remove_user(&user.id)?;
            json!({"removed": user.id})
        }
        Command::UserSetPassword { user, password } => {
            let user = find_user(app, &user)?;
            let digest = hash_password(app, &password)?;
            let user = app.store.update_user(&user.id, |u| {
                u.password_hash = digest.clone();
                u.updated_at = now;
            })?;
            user_view(&user)
        }
        Command::UserGrantRole { user, role } => {
            if role.trim().is_empty() {
                return Err(invalid("role must not be empty"));
            }
            let user = find_user(app, &user)?;
            let user = app.store.update_user(&user.id, |u| {
                if !u.roles.contains(&role) {
                    u.roles.push(role.clone());
                }
                u.updated_at = now;
            })?;
            user_view(&user)
        }
        Command::UserRevokeRole { user, role } => {
            let user = find_user(app, &user)?;
            let user = app.store.update_user(&user.id, |u| {
                u.roles.retain(|r| *r != role);
                u.updated_at = now;
            })?;
            user_view(&user)
        }
        Command::UserLogout { user } => {
            let user = find_user(app, &user)?;
            let summary = app.logout_everywhere(&user.id).await?;
            json!({"user": user.id, "logout": summary})
        }
        Command::KeysRotate { now: at_once } => {
            let activate_at = if at_once {
                now
            } else {
                now + app.config.keys.activation_delay.as_secs() as i64
            };
            json!(
                app.keys
                    .rotate(now, activate_at)
                    .map_err(|e| AdminError::Failed(e.to_string()))?
            )
        }
        Command::KeysList => json!(app.keys.list(now)),
        Command::PartnerAdd(spec) => {
            let created = partner::create(app, &spec)?;
            let mut v = partner::view(&created.partner, now);
            v["api_key"] = json!(created.api_key);
            v["webhook_secret"] = json!(created.webhook_secret);
            v
        }
        Command::PartnerList => json!(
            app.store
                .partners()?
                .iter()
                .map(|p| partner::view(p, now))
                .collect::<Vec<_>>()
        ),
        Command::PartnerShow { id } => partner::view(
            &app.store
                .partner(&id)?
                .ok_or_else(|| invalid(format!("no partner {id:?}")))?,
            now,
        ),
        Command::PartnerUpdate { id, spec } => {
            partner::view(&partner::update(app, &id, &spec)?, now)
        }
        Command::PartnerRotateKey { id, overlap_secs } => {
            let retire = partner::retire_from(overlap_secs, now);
            let (p, key) = partner::rotate_key(app, &id, retire)?;
            let mut v = partner::view(&p, now);
            v["api_key"] = json!(key);
            v
        }
        Command::PluginList => json!(
            app.plugins
                .list()
                .iter()
                .map(plugin_view)
                .collect::<Vec<_>>()
        ),
        Command::PluginReload => reload_plugins(app).await?,
        Command::PartnerRotateWebhookSecret { id, overlap_secs } => {
            let retire = partner::retire_from(overlap_secs, now);
            let (p, secret) = partner::rotate_webhook_secret(app, &id, retire)?;
            let mut v = partner::view(&p, now);
            v["webhook_secret"] = json!(secret);
            v
        }
    };
    app.store.flush().await?;
    Ok(result)
}
