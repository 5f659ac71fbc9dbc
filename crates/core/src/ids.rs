//! Typed, prefixed identifiers (`evt_`, `wh_`, `acc_`, `rp_`). Generated ones are a ULID after the prefix,
//! so they sort by creation time. A `WebhookId` cannot be passed where an `EventId` is wanted.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind} id (expected `{prefix}` followed by 1-64 letters, digits or `_`)")]
pub struct IdError {
    pub kind: &'static str,
    pub prefix: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$meta])*
        ///
        /// Shared text (`Arc<str>`): an id is copied into every map, message and index change that
        /// names it (a webhook's id sits in the projection three times, and in every effect, delivery
        /// row change and router entry of each event it gets), so a copy is a reference count, not an
        /// allocation; 100,000 webhooks hold each id once.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id: the prefix and a ULID (time-ordered).
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, ulid::Ulid::new().to_string().to_lowercase()).into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let err = IdError { kind: $kind, prefix: $prefix };
                let rest = s.strip_prefix($prefix).ok_or(err.clone())?;
                if rest.is_empty()
                    || rest.len() > 64
                    || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(err);
                }
                Ok(Self(s.into()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.as_ref().to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// An event: the same id is sent as `webhook-id` on every attempt and replay.
    EventId, "evt_", "event"
);
prefixed_id!(
    /// A webhook (subscription).
    WebhookId, "wh_", "webhook"
);
prefixed_id!(
    /// An account (tenant). `acc_default` always exists.
    AccountId, "acc_", "account"
);
prefixed_id!(
    /// A replay request.
    ReplayId, "rp_", "replay"
);

impl AccountId {
    /// The account that always exists, used by single-tenant installations.
    pub fn default_account() -> Self {
        Self("acc_default".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_shares_the_text_and_the_wire_form_is_unchanged() -> Result<(), serde_json::Error> {
        let id = WebhookId::generate();
        let copy = id.clone();
        assert!(std::ptr::eq(id.as_str().as_ptr(), copy.as_str().as_ptr()));
        let json = serde_json::to_string(&id)?;
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<WebhookId>(&json)?, id);
        assert!(serde_json::from_str::<WebhookId>("\"evt_1\"").is_err());
        Ok(())
    }

    #[test]
    fn generated_ids_parse_and_sort_by_time() {
        let a = EventId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = EventId::generate();
        assert!(a < b);
        assert_eq!(a.as_str().parse::<EventId>().ok(), Some(a.clone()));
        assert!(a.as_str().starts_with("evt_"));
    }

    #[test]
    fn wrong_prefix_or_characters_are_refused() {
        assert!("wh_abc".parse::<EventId>().is_err());
        assert!("evt_".parse::<EventId>().is_err());
        assert!("evt_a-b".parse::<EventId>().is_err());
        assert!("evt_abc".parse::<EventId>().is_ok());
        assert_eq!(AccountId::default_account().as_str(), "acc_default");
    }
}
