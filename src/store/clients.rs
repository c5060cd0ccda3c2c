//! Registered relying parties.

use super::{Store, StoreError};
use crate::types::{ClientId, RedirectUri};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum IdTokenAlg {
    #[default]
    ES256,
    RS256,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Client {
    pub id: ClientId,
    pub name: String,
    /// SHA-256 hex of the client secret; `None` for a public client.
    pub secret_digest: Option<String>,
    pub redirect_uris: Vec<RedirectUri>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    #[serde(default)]
    pub backchannel_logout_uri: Option<RedirectUri>,
    #[serde(default)]
    pub backchannel_logout_session_required: bool,
    pub first_party: bool,
    #[serde(default)]
    pub id_token_alg: IdTokenAlg,
    pub created_at: i64,
}

impl Client {
    pub fn is_public(&self) -> bool {
        self.secret_digest.is_none()
    }
}

pub(crate) fn clients_key(id: &ClientId) -> String {
    format!("client/{id}")
}

impl Store {
    pub fn insert_client(&self, client: &Client) -> Result<(), StoreError> {
        self.transact(|tx| {
            if tx.get::<Client>(&clients_key(&client.id))?.is_some() {
                return tx.reject(format!("client {:?} already exists", client.id.as_str()));
            }
            tx.put(&clients_key(&client.id), client)
        })
    }

    pub fn client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        self.get(&clients_key(id))
    }

    pub fn clients(&self) -> Result<Vec<Client>, StoreError> {
        Ok(self.scan("client/")?.into_iter().map(|(_, c)| c).collect())
    }

    pub fn remove_client(&self, id: &ClientId) -> Result<bool, StoreError> {
        self.transact(|tx| {
            let existed = tx.get::<Client>(&clients_key(id))?.is_some();
            tx.remove(&clients_key(id))?;
            Ok(existed)
        })
    }
}
