//! Accounts and their API keys on the [`Engine`] handle. Every change is a fact in the log
//! (`AccountCreated`, `ApiKeyCreated`, `ApiKeyRevoked`); the projection keeps only key hashes, so a key
//! is shown once, when it is made, and a revocation is refused from the moment it is acknowledged.

use super::Engine;
use crate::error::EngineError;
use crate::projection::Account;
use buildr_core::{api_key, validate, AccountId, NewApiKey, Record, Timestamp};

/// A key just made: `key` is shown to the caller once and never again.
#[derive(Clone)]
pub struct CreatedKey {
    pub key: String,
    pub prefix: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates an account and its first API key, in one atomic batch.
    pub async fn create_account(&self, name: &str) -> Result<(Account, CreatedKey), EngineError> {
        self.running()?;
        validate::account_name("account.name", name).map_err(EngineError::Invalid)?;
        let id = AccountId::generate();
        let at = Timestamp::now();
        let key = self.fresh_key();
        self.submit(vec![
            Record::AccountCreated {
                id: id.clone(),
                name: name.to_owned(),
                at,
            },
            key_record(&id, &key, at),
        ])
        .await?;
        Ok((self.account(&id)?, created(key)))
    }

    /// Every account (admin only), in id order.
    pub fn list_accounts(&self) -> Result<Vec<Account>, EngineError> {
        self.running()?;
        Ok(self.inner.projection.read().accounts().cloned().collect())
    }

    pub fn account(&self, id: &AccountId) -> Result<Account, EngineError> {
        self.running()?;
        self.inner
            .projection
            .read()
            .account(id)
            .cloned()
            .ok_or(EngineError::NotFound("account"))
    }

    /// Adds an API key to `account`.
    pub async fn create_api_key(&self, account: &AccountId) -> Result<CreatedKey, EngineError> {
        self.account(account)?;
        let key = self.fresh_key();
        self.submit(vec![key_record(account, &key, Timestamp::now())])
            .await?;
        Ok(created(key))
    }

    /// Revokes `account`'s key with this prefix; once this returns, the key is refused.
    pub async fn revoke_api_key(
        &self,
        account: &AccountId,
        prefix: &str,
    ) -> Result<(), EngineError> {
        self.running()?;
        let owned = self
            .inner
            .projection
            .read()
            .api_key(prefix)
            .is_some_and(|k| &k.account == account);
        if !owned {
            return Err(EngineError::NotFound("key"));
        }
        self.submit(vec![Record::ApiKeyRevoked {
            account: account.clone(),
            prefix: prefix.to_owned(),
            at: Timestamp::now(),
        }])
        .await?;
        Ok(())
    }

    /// The account whose live key `token` is, if any. The prefix finds the stored hash; the hashes are
    /// compared in constant time.
    pub fn authenticate_key(&self, token: &str) -> Result<Option<AccountId>, EngineError> {
        self.running()?;
        let Some(prefix) = api_key::prefix_of(token) else {
            return Ok(None);
        };
        let projection = self.inner.projection.read();
        Ok(projection
            .api_key(prefix)
            .filter(|k| api_key::key_matches(token, &k.hash))
            .map(|k| k.account.clone()))
    }

    /// A key whose prefix no live key has (a clash is a 1 in 62^8 event, but a prefix must name one key).
    fn fresh_key(&self) -> NewApiKey {
        let projection = self.inner.projection.read();
        loop {
            let key = NewApiKey::generate();
            if projection.api_key(&key.prefix).is_none() {
                return key;
            }
        }
    }
}

fn key_record(account: &AccountId, key: &NewApiKey, at: Timestamp) -> Record {
    Record::ApiKeyCreated {
        account: account.clone(),
        prefix: key.prefix.clone(),
        hash: key.hash,
        at,
    }
}

fn created(key: NewApiKey) -> CreatedKey {
    CreatedKey {
        key: key.key,
        prefix: key.prefix,
    }
}
