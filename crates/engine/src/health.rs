//! Whether storage accepts writes: the log writer and the delivery index writer report here when a
//! write fails and when it succeeds again after they reopened their database. `/readyz` is `503` while
//! either store refuses writes (a load balancer then sends traffic elsewhere), and `/metrics` shows it.

use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGaugeVec};

/// The two stores that can fail on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Log,
    DeliveryIndex,
}

impl Store {
    fn label(self) -> &'static str {
        match self {
            Store::Log => "log",
            Store::DeliveryIndex => "delivery_index",
        }
    }
}

pub struct StorageHealth {
    /// The error each store is failing with, if it is.
    failing: Mutex<[Option<String>; 2]>,
    writable: IntGaugeVec,
    errors: IntCounterVec,
}

impl StorageHealth {
    pub(crate) fn new(writable: IntGaugeVec, errors: IntCounterVec) -> Self {
        for store in [Store::Log, Store::DeliveryIndex] {
            writable.with_label_values(&[store.label()]).set(1);
        }
        Self {
            failing: Mutex::new([None, None]),
            writable,
            errors,
        }
    }

    /// `store` refused a write with `error`: logged the first time (then at debug level until it heals).
    pub fn failed(&self, store: Store, error: &str) {
        self.errors.with_label_values(&[store.label()]).inc();
        let mut failing = self.failing.lock();
        let slot = &mut failing[store as usize];
        if slot.is_none() {
            tracing::error!(store = store.label(), error, "storage refuses writes; writes answer 503 and the service retries until it accepts them again");
            self.writable.with_label_values(&[store.label()]).set(0);
        } else if slot.as_deref() != Some(error) {
            tracing::warn!(store = store.label(), error, "storage still refuses writes");
        }
        *slot = Some(error.to_owned());
    }

    /// `store` accepts writes again.
    pub fn healed(&self, store: Store) {
        let mut failing = self.failing.lock();
        if failing[store as usize].take().is_some() {
            tracing::info!(
                store = store.label(),
                "storage accepts writes again; healed without a restart"
            );
            self.writable.with_label_values(&[store.label()]).set(1);
        }
    }

    pub(crate) fn writable_gauge(&self) -> IntGaugeVec {
        self.writable.clone()
    }

    pub(crate) fn errors_counter(&self) -> IntCounterVec {
        self.errors.clone()
    }

    /// Why storage refuses writes now, if it does.
    pub fn problem(&self) -> Option<String> {
        let failing = self.failing.lock();
        [Store::Log, Store::DeliveryIndex].iter().find_map(|&s| {
            failing[s as usize]
                .as_ref()
                .map(|e| format!("{}: {e}", s.label()))
        })
    }
}
