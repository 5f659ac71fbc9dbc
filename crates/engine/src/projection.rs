//! The state the service serves from, derived only from the log: accounts and their API key hashes,
//! webhooks, each webhook's
//! undelivered backlog (with its retry state) and the idempotency keys. [`Projection::apply`] is pure and
//! deterministic, so a full replay of the log always rebuilds the same state, and it returns the
//! [`Effect`]s the live actors must act on.

pub use crate::pending::PendingMap;
use buildr_core::{
    AccountId, AttemptOutcome, IdempotencyRecord, Record, ReplayId, Timestamp, Webhook, WebhookId,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the actors must do after a record is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Deliver the event at `seq` to `webhook`, queued by the record at `queued_at` (the event itself, or
    /// a replay).
    Deliver {
        webhook: WebhookId,
        seq: u64,
        queued_at: u64,
    },
    /// The delivery of `seq` to `webhook` starts again from its first attempt (a replay named it while it
    /// was undelivered). Its subscription actor already knows; only derived indexes act on it.
    Restarted {
        webhook: WebhookId,
        seq: u64,
    },
    /// The webhook was created or changed (settings, secret, enabled state).
    WebhookChanged(WebhookId),
    WebhookRemoved(WebhookId),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub created_at: Timestamp,
    /// The prefixes of its live API keys, oldest first.
    pub key_prefixes: Vec<String>,
}

/// A live account API key: only its hash is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyEntry {
    pub account: AccountId,
    pub hash: [u8; 32],
    pub created_at: Timestamp,
}

/// An undelivered event of one webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The seq of the record that queued it (the event itself, or the replay that queued it again): a
    /// webhook's deliveries start in `(queued_at, seq)` order, which FIFO ordering keeps strictly, so a
    /// replay goes after what was already queued before it.
    pub queued_at: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (`None`: as soon as the rate limit allows).
    pub next_at: Option<Timestamp>,
    /// The seq of the latest replay that named it while it was undelivered, until its subscription actor
    /// has restarted it for that replay (`DeliveryRestarted`), or its delivery ended: then it starts again,
    /// queued at that replay.
    pub replayed: Option<u64>,
}

impl Pending {
    /// Queued by the record at `queued_at`, not attempted yet.
    pub fn queued(queued_at: u64) -> Self {
        Self {
            queued_at,
            attempts: 0,
            next_at: None,
            replayed: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEntry {
    pub webhook: Webhook,
    /// Undelivered events by seq.
    pub pending: PendingMap,
    /// The first failed attempt since the last success (for `disable_after`).
    pub failing_since: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyEntry {
    pub request_hash: [u8; 32],
    pub first_seq: u64,
    pub count: u32,
    pub batch: bool,
    pub at: Timestamp,
}

/// A replay's progress: `remaining` are the seqs not yet delivered (or finally failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayState {
    pub webhook: WebhookId,
    pub events: u64,
    pub remaining: BTreeSet<u64>,
    pub created_at: Timestamp,
}

impl ReplayState {
    pub fn done(&self) -> u64 {
        self.events - self.remaining.len() as u64
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    /// The last seq applied.
    pub last_seq: u64,
    accounts: BTreeMap<AccountId, Account>,
    /// Live API keys by prefix.
    api_keys: HashMap<String, ApiKeyEntry>,
    /// Boxed: an entry is 208 bytes (272 before ids were shared and a secret kept once; a test holds
    /// it there), and a B-tree leaf keeps room for eleven of them (about half of it unused when ids
    /// arrive in order), which was ~570 bytes per idle webhook; a box and its slot are ~250. Encoded
    /// the same (a box is transparent to serde).
    webhooks: BTreeMap<WebhookId, Box<WebhookEntry>>,
    by_account: HashMap<AccountId, BTreeSet<WebhookId>>,
    idempotency: HashMap<(AccountId, String), IdempotencyEntry>,
    replays: BTreeMap<ReplayId, ReplayState>,
}

impl Projection {
    /// Makes every copy of a webhook's id, and of its account's id, the one the projection's maps hold
    /// as `apply` does: a decoded checkpoint has a text of its own at each place an id appears (three
    /// per webhook), and ids are shared text (`Arc<str>`), so sharing them is what keeps a restarted
    /// server as small as one that built its projection from the log.
    pub(crate) fn share_ids(&mut self) {
        for (id, entry) in self.webhooks.iter_mut() {
            entry.webhook.id = id.clone();
            if let Some((account, _)) = self.by_account.get_key_value(&entry.webhook.account) {
                entry.webhook.account = account.clone();
            }
        }
        let webhooks = &self.webhooks;
        for ids in self.by_account.values_mut() {
            *ids = std::mem::take(ids)
                .into_iter()
                .map(|id| webhooks.get_key_value(&id).map_or(id, |(k, _)| k.clone()))
                .collect();
        }
    }

    pub fn apply(&mut self, seq: u64, record: &Record) -> Vec<Effect> {
        self.last_seq = seq;
        let mut effects = Vec::new();
        match record {
            Record::AccountCreated { id, name, at } => {
                // The first creation wins: two nodes of a cluster starting at once may both record the
                // default account, and a second record must not reset the keys of the first.
                self.accounts.entry(id.clone()).or_insert_with(|| Account {
                    id: id.clone(),
                    name: name.clone(),
                    created_at: *at,
                    key_prefixes: Vec::new(),
                });
            }
            Record::ApiKeyCreated {
                account,
                prefix,
                hash,
                at,
            } => {
                // The engine never reuses a prefix; if a log ever held two, the first one wins.
                if let Some(acc) = self.accounts.get_mut(account) {
                    if !self.api_keys.contains_key(prefix) {
                        acc.key_prefixes.push(prefix.clone());
                        self.api_keys.insert(
                            prefix.clone(),
                            ApiKeyEntry {
                                account: account.clone(),
                                hash: *hash,
                                created_at: *at,
                            },
                        );
                    }
                }
            }
            Record::ApiKeyRevoked {
                account, prefix, ..
            } => {
                if self
                    .api_keys
                    .get(prefix)
                    .is_some_and(|k| &k.account == account)
                {
                    self.api_keys.remove(prefix);
                    if let Some(acc) = self.accounts.get_mut(account) {
                        acc.key_prefixes.retain(|p| p != prefix);
                    }
                }
            }
            Record::WebhookCreated(w) => {
                let mut webhook = w.clone();
                // The account's id as the account set holds it: one copy shared by all its webhooks.
                if let Some((account, _)) = self.by_account.get_key_value(&w.account) {
                    webhook.account = account.clone();
                }
                self.by_account
                    .entry(webhook.account.clone())
                    .or_default()
                    .insert(w.id.clone());
                self.webhooks.insert(
                    w.id.clone(),
                    Box::new(WebhookEntry {
                        webhook,
                        pending: PendingMap::new(),
                        failing_since: None,
                    }),
                );
                effects.push(Effect::WebhookChanged(w.id.clone()));
            }
            Record::WebhookUpdated { id, changes, at } => {
                if let Some(e) = self.webhooks.get_mut(id) {
                    e.webhook.apply(changes, *at);
                    if changes.disabled == Some((false, None)) {
                        e.failing_since = None;
                    }
                    effects.push(Effect::WebhookChanged(id.clone()));
                }
            }
            Record::SecretRotated {
                id,
                secret,
                previous_until,
                at,
            } => {
                if let Some(e) = self.webhooks.get_mut(id) {
                    e.webhook.rotate(secret.clone(), *previous_until, *at);
                    effects.push(Effect::WebhookChanged(id.clone()));
                }
            }
            Record::WebhookDeleted { id, .. } => {
                if let Some(e) = self.webhooks.remove(id) {
                    if let Some(set) = self.by_account.get_mut(&e.webhook.account) {
                        set.remove(id);
                    }
                    self.replays.retain(|_, r| &r.webhook != id);
                    effects.push(Effect::WebhookRemoved(id.clone()));
                }
            }
            Record::EventPublished(ev) if ev.only_webhook.is_some() => {
                let target = ev
                    .only_webhook
                    .as_ref()
                    .and_then(|id| self.webhooks.get_mut(id));
                if let Some(e) =
                    target.filter(|e| e.webhook.account == ev.account && !e.webhook.disabled)
                {
                    e.pending.insert(seq, Pending::queued(seq));
                    effects.push(Effect::Deliver {
                        webhook: e.webhook.id.clone(),
                        seq,
                        queued_at: seq,
                    });
                }
            }
            Record::EventPublished(ev) => {
                if let Some(ids) = self.by_account.get(&ev.account) {
                    for id in ids {
                        let Some(e) = self.webhooks.get_mut(id) else {
                            continue;
                        };
                        if !e.webhook.disabled && e.webhook.wants(ev.event_type) {
                            e.pending.insert(seq, Pending::queued(seq));
                            effects.push(Effect::Deliver {
                                webhook: id.clone(),
                                seq,
                                queued_at: seq,
                            });
                        }
                    }
                }
            }
            Record::IdempotencyKeyUsed(IdempotencyRecord {
                account,
                key,
                request_hash,
                count,
                batch,
                at,
            }) => {
                self.idempotency.insert(
                    (account.clone(), key.clone()),
                    IdempotencyEntry {
                        request_hash: *request_hash,
                        first_seq: seq.saturating_sub(u64::from(*count)),
                        count: *count,
                        batch: *batch,
                        at: *at,
                    },
                );
            }
            Record::ReplayRequested {
                id,
                webhook,
                seqs,
                at,
            } => {
                if let Some(e) = self.webhooks.get_mut(webhook) {
                    for &s in seqs {
                        // An undelivered event is sent once more too (after an attempt in flight): the
                        // actor that holds it hears of the replay and restarts it.
                        match e.pending.get_mut(&s) {
                            None => {
                                e.pending.insert(s, Pending::queued(seq));
                            }
                            Some(p) => p.replayed = Some(seq),
                        }
                        effects.push(Effect::Deliver {
                            webhook: webhook.clone(),
                            seq: s,
                            queued_at: seq,
                        });
                    }
                    self.replays.insert(
                        id.clone(),
                        ReplayState {
                            webhook: webhook.clone(),
                            events: seqs.len() as u64,
                            remaining: seqs.iter().copied().collect(),
                            created_at: *at,
                        },
                    );
                }
            }
            Record::ReplaysExpired { ids, .. } => {
                for id in ids {
                    self.replays.remove(id);
                }
            }
            Record::DeliveryAttempted(a) => {
                if let Some(e) = self.webhooks.get_mut(&a.webhook) {
                    // A delivery a replay named ends: it is queued again at that replay (its actor,
                    // if it saw the replay, says so with a `DeliveryRestarted` in the same batch; if
                    // the attempt ended before it did, it takes the seq afresh). A retrying one is
                    // restarted only by a `DeliveryRestarted`: in FIFO order it keeps its place and
                    // retries until it is delivered or finally failed.
                    let ends = !matches!(a.outcome, AttemptOutcome::Retrying { .. });
                    let replayed = e.pending.get(&a.seq).and_then(|p| p.replayed);
                    let restart = replayed.filter(|_| ends);
                    let finished = replayed.is_none() && ends;
                    if finished {
                        for r in self.replays.values_mut().filter(|r| r.webhook == a.webhook) {
                            r.remaining.remove(&a.seq);
                        }
                    }
                    match a.outcome {
                        AttemptOutcome::Succeeded => {
                            e.pending.remove(&a.seq);
                            e.failing_since = None;
                        }
                        AttemptOutcome::Failed => {
                            e.pending.remove(&a.seq);
                            e.failing_since.get_or_insert(a.at);
                        }
                        AttemptOutcome::Retrying { next_at } => {
                            if let Some(p) = e.pending.get_mut(&a.seq) {
                                p.attempts = a.attempt;
                                p.next_at = Some(next_at);
                            }
                            e.failing_since.get_or_insert(a.at);
                        }
                    }
                    if let Some(replay) = restart {
                        // Queued again at the replay, after what was queued before it.
                        e.pending.insert(a.seq, Pending::queued(replay));
                        effects.push(Effect::Restarted {
                            webhook: a.webhook.clone(),
                            seq: a.seq,
                        });
                    }
                }
            }
            Record::DeliveryRestarted {
                webhook,
                seq,
                replay,
                ..
            } => {
                if let Some(p) = self
                    .webhooks
                    .get_mut(webhook)
                    .and_then(|e| e.pending.get_mut(seq))
                {
                    // A later replay that named it meanwhile still restarts it (after the attempt the
                    // actor makes now, or with a restart of its own).
                    let later = p.replayed.filter(|r| r != replay);
                    *p = Pending {
                        replayed: later,
                        ..Pending::queued(*replay)
                    };
                    effects.push(Effect::Restarted {
                        webhook: webhook.clone(),
                        seq: *seq,
                    });
                }
            }
        }
        effects
    }

    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }

    /// Every account, in id order (admin only).
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// The live API key with this prefix.
    pub fn api_key(&self, prefix: &str) -> Option<&ApiKeyEntry> {
        self.api_keys.get(prefix)
    }

    /// A webhook of `account` (another account's webhook is not found).
    pub fn webhook(&self, account: &AccountId, id: &WebhookId) -> Option<&WebhookEntry> {
        self.webhooks
            .get(id)
            .map(|e| &**e)
            .filter(|e| &e.webhook.account == account)
    }

    /// Every webhook, for the actors (not for request handlers: those use [`Projection::webhook`]).
    pub fn all_webhooks(&self) -> impl Iterator<Item = &WebhookEntry> {
        self.webhooks.values().map(|e| &**e)
    }

    pub fn webhook_by_id(&self, id: &WebhookId) -> Option<&WebhookEntry> {
        self.webhooks.get(id).map(|e| &**e)
    }

    /// `account`'s webhooks in id (creation) order, after `after`, at most `limit`.
    pub fn list_webhooks(
        &self,
        account: &AccountId,
        after: Option<&WebhookId>,
        limit: usize,
    ) -> Vec<&Webhook> {
        let Some(ids) = self.by_account.get(account) else {
            return Vec::new();
        };
        let iter: Box<dyn Iterator<Item = &WebhookId>> =
            match after {
                Some(a) => Box::new(ids.range::<WebhookId, _>((
                    std::ops::Bound::Excluded(a),
                    std::ops::Bound::Unbounded,
                ))),
                None => Box::new(ids.iter()),
            };
        iter.filter_map(|id| self.webhooks.get(id))
            .map(|e| &e.webhook)
            .take(limit)
            .collect()
    }

    /// A replay of `webhook` (of `account`).
    pub fn replay(
        &self,
        account: &AccountId,
        webhook: &WebhookId,
        id: &ReplayId,
    ) -> Option<&ReplayState> {
        self.webhook(account, webhook)?;
        self.replays.get(id).filter(|r| &r.webhook == webhook)
    }

    pub fn idempotency(&self, account: &AccountId, key: &str) -> Option<&IdempotencyEntry> {
        self.idempotency.get(&(account.clone(), key.to_owned()))
    }

    /// Forgets idempotency keys older than `cutoff`.
    pub fn expire_idempotency(&mut self, cutoff: Timestamp) {
        self.idempotency.retain(|_, e| e.at >= cutoff);
    }

    /// What retention must keep: every undelivered seq, and the webhooks failing now.
    pub fn retention_keep(&self) -> crate::retention::Keep {
        let mut keep = crate::retention::Keep::default();
        for e in self.webhooks.values() {
            keep.pending.extend(e.pending.keys().copied());
            if e.failing_since.is_some() {
                keep.failing.insert(e.webhook.id.clone());
            }
        }
        for r in self.replays.values() {
            keep.pending.extend(r.remaining.iter().copied());
        }
        keep.replays.extend(self.replays.keys().cloned());
        keep.webhooks.extend(self.webhooks.keys().cloned());
        keep.api_keys.extend(self.api_keys.keys().cloned());
        keep
    }

    /// Finished replays created before `cutoff`: retention forgets them (a `ReplaysExpired` record) and
    /// then removes their `ReplayRequested` records.
    pub fn expired_replays(&self, cutoff: Timestamp) -> Vec<ReplayId> {
        self.replays
            .iter()
            .filter(|(_, r)| r.remaining.is_empty() && r.created_at < cutoff)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn webhook_count(&self) -> usize {
        self.webhooks.len()
    }

    pub fn backlog(&self) -> usize {
        self.webhooks.values().map(|e| e.pending.len()).sum()
    }
}

#[cfg(test)]
#[path = "projection_tests.rs"]
pub(crate) mod tests;
