//! A webhook's undelivered events in the projection, by seq: [`PendingMap`]. Most webhooks have none or
//! one (a fan-out to many webhooks gives each one), so those cases take no tree: a `BTreeMap` with one
//! entry allocates a whole leaf node (~630 bytes for eleven entries), which for one event to 100,000
//! webhooks was ~60 MB. It serializes exactly as the `BTreeMap<u64, Pending>` it replaces (a map in seq
//! order), so checkpoints written before and after read the same.

use crate::projection::Pending;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub enum PendingMap {
    #[default]
    Empty,
    One(Box<(u64, Pending)>),
    /// Two or more (never fewer: the form is canonical, so equal maps compare equal).
    Many(BTreeMap<u64, Pending>),
}

impl PendingMap {
    pub fn new() -> Self {
        Self::Empty
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(_) => 1,
            Self::Many(m) => m.len(),
        }
    }

    pub fn get(&self, seq: &u64) -> Option<&Pending> {
        match self {
            Self::Empty => None,
            Self::One(one) => (one.0 == *seq).then_some(&one.1),
            Self::Many(m) => m.get(seq),
        }
    }

    pub fn get_mut(&mut self, seq: &u64) -> Option<&mut Pending> {
        match self {
            Self::Empty => None,
            Self::One(one) => (one.0 == *seq).then_some(&mut one.1),
            Self::Many(m) => m.get_mut(seq),
        }
    }

    pub fn contains_key(&self, seq: &u64) -> bool {
        self.get(seq).is_some()
    }

    /// Sets `seq`'s entry, returning the one it replaces.
    pub fn insert(&mut self, seq: u64, p: Pending) -> Option<Pending> {
        match self {
            Self::Empty => {
                *self = Self::One(Box::new((seq, p)));
                None
            }
            Self::One(one) if one.0 == seq => Some(std::mem::replace(&mut one.1, p)),
            Self::One(one) => {
                let (s, q) = **one;
                *self = Self::Many(BTreeMap::from([(s, q), (seq, p)]));
                None
            }
            Self::Many(m) => m.insert(seq, p),
        }
    }

    pub fn remove(&mut self, seq: &u64) -> Option<Pending> {
        match self {
            Self::Empty => None,
            Self::One(one) if one.0 == *seq => {
                let p = one.1;
                *self = Self::Empty;
                Some(p)
            }
            Self::One(_) => None,
            Self::Many(m) => {
                let p = m.remove(seq);
                if m.len() < 2 {
                    *self = std::mem::take(m).into_iter().collect();
                }
                p
            }
        }
    }

    /// The entries in seq order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&u64, &Pending)> + '_ {
        let one = match self {
            Self::One(one) => Some((&one.0, &one.1)),
            _ => None,
        };
        let many = match self {
            Self::Many(m) => Some(m.iter()),
            _ => None,
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// The seqs in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &u64> + '_ {
        self.iter().map(|(seq, _)| seq)
    }
}

impl FromIterator<(u64, Pending)> for PendingMap {
    fn from_iter<I: IntoIterator<Item = (u64, Pending)>>(iter: I) -> Self {
        let mut map = Self::Empty;
        for (seq, p) in iter {
            map.insert(seq, p);
        }
        map
    }
}

impl Serialize for PendingMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // What `BTreeMap`'s own impl does: a map of its length, then the entries in key order.
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.len()))?;
        for (seq, p) in self.iter() {
            map.serialize_entry(seq, p)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for PendingMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<u64, Pending>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: u64) -> Pending {
        Pending::queued(q)
    }

    #[test]
    fn behaves_like_a_btreemap() {
        let mut ours = PendingMap::new();
        let mut theirs = BTreeMap::new();
        // Inserts, replacements and removals that move between the three forms.
        let steps: &[(bool, u64)] = &[
            (true, 5),
            (true, 5),
            (true, 3),
            (false, 5),
            (false, 4),
            (false, 3),
            (false, 3),
            (true, 9),
            (true, 1),
            (true, 7),
            (false, 1),
            (false, 9),
            (true, 2),
            (false, 7),
            (false, 2),
        ];
        for (i, &(insert, seq)) in steps.iter().enumerate() {
            if insert {
                assert_eq!(
                    ours.insert(seq, p(i as u64)),
                    theirs.insert(seq, p(i as u64))
                );
            } else {
                assert_eq!(ours.remove(&seq), theirs.remove(&seq));
            }
            assert_eq!(ours.len(), theirs.len());
            assert_eq!(ours.is_empty(), theirs.is_empty());
            assert!(ours.iter().eq(theirs.iter()), "step {i}");
            assert_eq!(ours.keys().next_back(), theirs.keys().next_back());
            assert_eq!(ours, theirs.clone().into_iter().collect(), "canonical form");
            for s in 0..10 {
                assert_eq!(ours.get(&s), theirs.get(&s));
            }
        }
        assert_eq!(ours, PendingMap::Empty);
    }

    #[test]
    fn encodes_as_the_btreemap_it_replaces() {
        let cfg = bincode::config::standard();
        for n in [0u64, 1, 2, 40] {
            let theirs: BTreeMap<u64, Pending> = (0..n).map(|s| (s * 3 + 1, p(s))).collect();
            let ours: PendingMap = theirs.clone().into_iter().collect();
            let a = bincode::serde::encode_to_vec(&theirs, cfg).unwrap_or_default();
            let b = bincode::serde::encode_to_vec(&ours, cfg).unwrap_or_default();
            assert_eq!(a, b, "{n} entries");
            let back: PendingMap = bincode::serde::decode_from_slice(&a, cfg)
                .map(|(m, _)| m)
                .unwrap_or_default();
            assert_eq!(back, ours);
        }
    }
}
