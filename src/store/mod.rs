//! The only code that knows sled.
//!
//! Everything lives in one sled tree under prefixed keys (`client/…`, `user/…`, …), so
//! any update that touches several records is one single-tree transaction. Records are
//! JSON. A write that a response acknowledges is followed by [`Store::flush`], which
//! concurrent requests share (sled batches them into one fsync).

mod clients;
mod grants;
mod outbox;
mod partners;
mod plugin_data;
mod sessions;
mod sweep;
mod users;

pub use clients::*;
pub use grants::*;
pub use outbox::*;
pub use partners::*;
pub use plugin_data::*;
pub use sessions::*;
pub use sweep::*;
pub use users::*;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("stored record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{0}")]
    Rejected(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// A handle to the embedded database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

/// One transaction in progress: typed JSON access to the tree.
pub struct Txn<'a> {
    tree: &'a TransactionalTree,
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

impl Txn<'_> {
    pub(crate) fn get<T: DeserializeOwned>(&self, key: &str) -> TxResult<Option<T>> {
        match self.tree.get(key.as_bytes())? {
            None => Ok(None),
            Some(v) => decode(key, &v).map(Some).or_else(abort),
        }
    }

    pub(crate) fn put<T: Serialize>(&self, key: &str, value: &T) -> TxResult<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| {
            ConflictableTransactionError::Abort(StoreError::Io(format!("encode {key}: {e}")))
        })?;
        self.tree.insert(key.as_bytes(), bytes)?;
        Ok(())
    }

    pub(crate) fn remove(&self, key: &str) -> TxResult<()> {
        self.tree.remove(key.as_bytes())?;
        Ok(())
    }

    pub(crate) fn reject<T>(&self, reason: impl Into<String>) -> TxResult<T> {
        abort(StoreError::Rejected(reason.into()))
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| StoreError::Io(format!("cannot open store at {}: {e}", dir.display())))?;
        Ok(Store { db })
    }

    /// Runs `f` as one atomic transaction (retried by sled on conflict).
    pub(crate) fn transact<T>(&self, f: impl Fn(&Txn) -> TxResult<T>) -> Result<T, StoreError> {
        self.db
            .transaction(|tree| f(&Txn { tree }))
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StoreError::from(e),
            })
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.db.get(key.as_bytes())? {
            None => Ok(None),
            Some(v) => decode(key, &v).map(Some),
        }
    }

    /// Every record whose key starts with `prefix`, in key order.
    pub(crate) fn scan<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.db
            .scan_prefix(prefix.as_bytes())
            .map(|kv| {
                let (k, v) = kv?;
                let key = String::from_utf8_lossy(&k).into_owned();
                let value = decode(&key, &v)?;
                Ok((key, value))
            })
            .collect()
    }

    /// Makes every write so far durable. Runs a blocking flush on the blocking pool:
    /// sled 0.34's `flush_async` can deadlock when many run alongside transactions.
    /// Concurrent callers still share fsyncs: a flush that finds the log already stable
    /// up to its writes returns at once.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Io(format!("flush task failed: {e}")))??;
        Ok(())
    }

    /// Blocking flush, for shutdown and the CLI.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
