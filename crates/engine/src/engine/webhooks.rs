//! Engine calls on webhooks: create, read, list, change, delete, rotate the secret.

use crate::error::EngineError;
use crate::target;
use buildr_core::{
    validate, AccountId, FieldError, Record, Secret, Timestamp, Webhook, WebhookChanges, WebhookId,
};

use super::{Engine, NewWebhook};

impl Engine {
    pub async fn create_webhook(
        &self,
        account: &AccountId,
        new: NewWebhook,
    ) -> Result<Webhook, EngineError> {
        self.require_account(account)?;
        let url = validate::target_url("webhook.url", &new.url).map_err(EngineError::Invalid)?;
        target::check_url(&url, self.inner.config.delivery.allow_private_targets)
            .await
            .map_err(|m| EngineError::Unprocessable(FieldError::new("webhook.url", m)))?;
        let now = Timestamp::now();
        let webhook = Webhook {
            id: WebhookId::generate(),
            account: account.clone(),
            url: new.url,
            description: new.description,
            filter_types: new.filter_types,
            rate_limit: new.rate_limit,
            secret: new.secret.unwrap_or_else(Secret::generate),
            previous_secret: None,
            disabled: false,
            disabled_reason: None,
            created_at: now,
            updated_at: now,
            ordering: new.ordering,
        };
        self.submit(vec![Record::WebhookCreated(webhook.clone())])
            .await?;
        Ok(webhook)
    }

    pub fn get_webhook(&self, account: &AccountId, id: &WebhookId) -> Result<Webhook, EngineError> {
        self.running()?;
        self.inner
            .projection
            .read()
            .webhook(account, id)
            .map(|e| e.webhook.clone())
            .ok_or(EngineError::NotFound("webhook"))
    }

    /// `account`'s webhooks after `after` (a cursor), at most `limit`; and the cursor of the next page.
    pub fn list_webhooks(
        &self,
        account: &AccountId,
        after: Option<&WebhookId>,
        limit: usize,
    ) -> Result<(Vec<Webhook>, Option<WebhookId>), EngineError> {
        self.running()?;
        let projection = self.inner.projection.read();
        let mut page: Vec<Webhook> = projection
            .list_webhooks(account, after, limit + 1)
            .into_iter()
            .cloned()
            .collect();
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|w| w.id.clone())
        } else {
            None
        };
        Ok((page, next))
    }

    pub async fn update_webhook(
        &self,
        account: &AccountId,
        id: &WebhookId,
        changes: WebhookChanges,
    ) -> Result<Webhook, EngineError> {
        self.get_webhook(account, id)?;
        if let Some(u) = &changes.url {
            let url = validate::target_url("webhook.url", u).map_err(EngineError::Invalid)?;
            target::check_url(&url, self.inner.config.delivery.allow_private_targets)
                .await
                .map_err(|m| EngineError::Unprocessable(FieldError::new("webhook.url", m)))?;
        }
        if !changes.is_empty() {
            self.submit(vec![Record::WebhookUpdated {
                id: id.clone(),
                changes,
                at: Timestamp::now(),
            }])
            .await?;
        }
        self.get_webhook(account, id)
    }

    pub async fn delete_webhook(
        &self,
        account: &AccountId,
        id: &WebhookId,
    ) -> Result<(), EngineError> {
        self.get_webhook(account, id)?;
        self.submit(vec![Record::WebhookDeleted {
            id: id.clone(),
            at: Timestamp::now(),
        }])
        .await?;
        Ok(())
    }

    /// Replaces the signing key; the previous one keeps signing for `secret_rotation_overlap`.
    pub async fn rotate_secret(
        &self,
        account: &AccountId,
        id: &WebhookId,
        secret: Option<Secret>,
    ) -> Result<Secret, EngineError> {
        self.get_webhook(account, id)?;
        let secret = secret.unwrap_or_else(Secret::generate);
        let at = Timestamp::now();
        let previous_until = at.plus(self.inner.config.delivery.secret_rotation_overlap);
        self.submit(vec![Record::SecretRotated {
            id: id.clone(),
            secret: secret.clone(),
            previous_until,
            at,
        }])
        .await?;
        Ok(secret)
    }
}
