//! Account API keys (`bk_…`): 43 random alphanumeric characters after the prefix (≈ 256 bits), shown
//! once and stored only as their SHA-256 (a fast hash is enough for a key of that entropy). A key's
//! first [`KEY_PREFIX_LEN`] characters are its public name: they find the stored hash, which is then
//! compared in constant time.

use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const API_KEY_PREFIX: &str = "bk_";
/// `bk_` and 8 characters: identifies a key, not secret.
pub const KEY_PREFIX_LEN: usize = 11;
/// Random characters after `bk_` (62 symbols each: 43 × log2(62) ≈ 256 bits).
const RANDOM_CHARS: usize = 43;

/// A freshly made key: the text to show once, its public prefix and the hash to store.
#[derive(Clone)]
pub struct NewApiKey {
    pub key: String,
    pub prefix: String,
    pub hash: [u8; 32],
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl NewApiKey {
    pub fn generate() -> Self {
        let random = Alphanumeric.sample_string(&mut rand::thread_rng(), RANDOM_CHARS);
        let key = format!("{API_KEY_PREFIX}{random}");
        Self {
            prefix: key[..KEY_PREFIX_LEN].to_owned(),
            hash: hash_key(&key),
            key,
        }
    }
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The public prefix of something that looks like an API key, or `None`.
pub fn prefix_of(token: &str) -> Option<&str> {
    if !token.starts_with(API_KEY_PREFIX) || !token.is_char_boundary(KEY_PREFIX_LEN) {
        return None;
    }
    token.get(..KEY_PREFIX_LEN)
}

/// Whether `presented` hashes to `stored`, in constant time.
pub fn key_matches(presented: &str, stored: &[u8; 32]) -> bool {
    bool::from(hash_key(presented).ct_eq(stored))
}

/// Whether `s` could be a key prefix (`bk_` + 8 alphanumerics).
pub fn is_prefix(s: &str) -> bool {
    s.len() == KEY_PREFIX_LEN
        && s.starts_with(API_KEY_PREFIX)
        && s[API_KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_match_only_themselves() {
        let a = NewApiKey::generate();
        let b = NewApiKey::generate();
        assert_ne!(a.key, b.key);
        assert_eq!(a.key.len(), 3 + RANDOM_CHARS);
        assert_eq!(prefix_of(&a.key), Some(a.prefix.as_str()));
        assert!(is_prefix(&a.prefix));
        assert!(key_matches(&a.key, &a.hash));
        assert!(!key_matches(&b.key, &a.hash));
        assert!(
            !format!("{a:?}").contains(&a.key),
            "Debug never shows the key"
        );
    }

    #[test]
    fn prefixes_of_odd_tokens() {
        assert_eq!(prefix_of("bk_short"), None);
        assert_eq!(prefix_of("admin-token-0123456789"), None);
        assert_eq!(prefix_of("bk_1234567é"), None);
        assert!(!is_prefix("bk_1234567-"));
    }
}
