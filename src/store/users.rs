//! User accounts, looked up by id, username or email (case-insensitively).

use super::{Store, StoreError, Txn, TxResult};
use crate::types::UserId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub roles: Vec<String>,
    /// Argon2id PHC string. Never leaves the store except to the password verifier.
    pub password_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn key(id: &UserId) -> String {
    format!("user/{id}")
}
fn name_key(username: &str) -> String {
    format!("username/{}", username.to_lowercase())
}
fn email_key(email: &str) -> String {
    format!("email/{}", email.to_lowercase())
}

fn load(tx: &Txn, id: &UserId) -> TxResult<User> {
    match tx.get::<User>(&key(id))? {
        Some(u) => Ok(u),
        None => tx.reject(format!("no user {:?}", id.as_str())),
    }
}

impl Store {
    pub fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        self.transact(|tx| {
            if tx.get::<UserId>(&name_key(&user.username))?.is_some() {
                return tx.reject(format!("username {:?} is taken", user.username));
            }
            if let Some(email) = &user.email {
                if tx.get::<UserId>(&email_key(email))?.is_some() {
                    return tx.reject(format!("email {email:?} is taken"));
                }
                tx.put(&email_key(email), &user.id)?;
            }
            tx.put(&name_key(&user.username), &user.id)?;
            tx.put(&key(&user.id), user)
        })
    }

    pub fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.get(&key(id))
    }

    /// Finds a user by username or email.
    pub fn user_by_login(&self, login: &str) -> Result<Option<User>, StoreError> {
        let id = match self.get::<UserId>(&name_key(login))? {
            Some(id) => Some(id),
            None => self.get::<UserId>(&email_key(login))?,
        };
        match id {
            Some(id) => self.user(&id),
            None => Ok(None),
        }
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        Ok(self.scan("user/")?.into_iter().map(|(_, u)| u).collect())
    }

    /// Applies `change` to the stored user atomically and returns the result.
    pub fn update_user(
        &self,
        id: &UserId,
        change: impl Fn(&mut User),
    ) -> Result<User, StoreError> {
        self.transact(|tx| {
            let mut user = load(tx, id)?;
            change(&mut user);
            tx.put(&key(id), &user)?;
            Ok(user)
        })
    }

    /// Removes the user, their login names, sessions and refresh-token families.
    pub fn remove_user(&self, id: &UserId) -> Result<(), StoreError> {
        self.transact(|tx| {
            let user = load(tx, id)?;
            tx.remove(&name_key(&user.username))?;
            if let Some(email) = &user.email {
                tx.remove(&email_key(email))?;
            }
            super::sessions::end_all_in(tx, id)?;
            tx.remove(&key(id))
        })
    }
}
