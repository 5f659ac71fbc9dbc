//! What the customer sees of a delivery (one event to one webhook): its status and last attempt.

use crate::event::EventType;
use crate::ids::EventId;
use crate::record::{AttemptOutcome, AttemptRecord};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    /// Not attempted yet (or queued again by a replay).
    Pending,
    /// Failed at least once; another attempt is scheduled.
    Retrying,
    Succeeded,
    /// Every attempt of the schedule failed; kept for replay.
    Failed,
}

impl DeliveryStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "retrying" => Ok(DeliveryStatus::Retrying),
            "succeeded" => Ok(DeliveryStatus::Succeeded),
            "failed" => Ok(DeliveryStatus::Failed),
            _ => Err(()),
        }
    }
}

/// The summary row of one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub event_id: EventId,
    pub event_type: EventType,
    pub status: DeliveryStatus,
    /// Attempts made in all (replays included).
    pub attempts: u32,
    pub last_attempt_at: Option<Timestamp>,
    pub next_attempt_at: Option<Timestamp>,
    pub response_status: Option<u16>,
    pub response_body: String,
    pub error: Option<String>,
    pub duration_ms: Option<u64>,
}

impl Delivery {
    pub fn queued(event_id: EventId, event_type: EventType) -> Self {
        Self {
            event_id,
            event_type,
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_attempt_at: None,
            next_attempt_at: None,
            response_status: None,
            response_body: String::new(),
            error: None,
            duration_ms: None,
        }
    }

    /// Queued again (a replay): pending, history kept.
    pub fn requeue(&mut self) {
        self.status = DeliveryStatus::Pending;
        self.next_attempt_at = None;
    }

    pub fn record(&mut self, a: &AttemptRecord) {
        self.attempts += 1;
        self.last_attempt_at = Some(a.at);
        self.response_status = a.response_status;
        self.response_body.clone_from(&a.response_body);
        self.error.clone_from(&a.error);
        self.duration_ms = Some(a.duration_ms);
        (self.status, self.next_attempt_at) = match a.outcome {
            AttemptOutcome::Succeeded => (DeliveryStatus::Succeeded, None),
            AttemptOutcome::Retrying { next_at } => (DeliveryStatus::Retrying, Some(next_at)),
            AttemptOutcome::Failed => (DeliveryStatus::Failed, None),
        };
    }
}
