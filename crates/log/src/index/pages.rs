//! A webhook's delivery rows in pages: rows with neighbouring seqs stored as one sled value, under the
//! key of the seq the page started at.
//!
//! sled's cost is per key written (a tree walk, a page link, a copy of the node and, as keys arrive, node
//! splits: 87 % of the index writer's time in a fan-out), not per byte. A fan-out writes each delivery's
//! row twice (queued, then attempted) and a batch holds many rows of one webhook with neighbouring seqs,
//! so one key per page instead of one per row cuts the index's writes by about the rows per page
//! touched in a batch (S3: ~15 per webhook and batch).
//!
//! Invariants: the pages of a webhook are disjoint and in key order: every row of a page has a seq at
//! least its key and below the next page's key. A row is found in the page with the greatest key at or
//! below its seq.

use super::{dec, enc, prefix, Row};
use crate::LogError;
use buildr_core::WebhookId;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;

/// A new row starts a new page once the webhook's last page holds this many rows...
const PAGE_ROWS: usize = 64;
/// ...or about this many bytes (rows keep up to 1 KiB of their last response: a page of large answers
/// holds fewer rows, so rewriting it stays cheap).
const PAGE_BYTES: usize = 4096;
/// A page grown past this many rows (a replay inserting rows between existing ones) is split when it
/// is written.
const SPLIT_ROWS: usize = 2 * PAGE_ROWS;

/// How many webhooks' last pages [`Tails`] keeps decoded: more webhooks than a fan-out's batch touches.
/// A decoded page is at most ~16 KiB ([`PAGE_ROWS`] rows of a few hundred bytes, or fewer holding up to
/// [`PAGE_BYTES`] of answers), so ~16 MiB at worst (S3's 100 webhooks: under 2 MiB).
const CACHED_TAILS: NonZeroUsize = NonZeroUsize::new(1024).unwrap();

/// The key of `webhook`'s page that starts at `seq`.
pub(super) fn key(webhook: &WebhookId, seq: u64) -> Vec<u8> {
    let mut k = prefix(b'r', webhook);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `webhook`'s page in `tree` with the greatest key at or below `seq` (the one that holds that seq if
/// the webhook has a row there; at `u64::MAX`, its last page): the seq it starts at and its value.
pub(super) fn floor_in(
    tree: &sled::Tree,
    webhook: &WebhookId,
    seq: u64,
) -> Result<Option<(u64, sled::IVec)>, LogError> {
    match tree.range(key(webhook, 0)..=key(webhook, seq)).next_back() {
        Some(item) => {
            let (k, v) = item?;
            Ok(super::seq_suffix(&k).map(|at| (at, v)))
        }
        None => Ok(None),
    }
}

/// Rows of one webhook, ascending by seq.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Page {
    rows: Vec<(u64, Row)>,
}

impl Page {
    /// The page a stored value holds (an unreadable one as empty: the index is derived, and a row it
    /// lost is one a rebuild brings back).
    pub(super) fn decode(value: &[u8]) -> Self {
        dec(value).unwrap_or_default()
    }

    pub(super) fn get(&self, seq: u64) -> Option<&Row> {
        let i = self.rows.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        self.rows.get(i).map(|(_, r)| r)
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut Row> {
        let i = self.rows.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        self.rows.get_mut(i).map(|(_, r)| r)
    }

    /// Its rows, ascending by seq.
    pub(super) fn rows(&self) -> impl DoubleEndedIterator<Item = (u64, &Row)> {
        self.rows.iter().map(|(s, r)| (*s, r))
    }

    fn last_seq(&self) -> Option<u64> {
        self.rows.last().map(|(s, _)| *s)
    }

    fn is_full(&self) -> bool {
        self.rows.len() >= PAGE_ROWS
            || self.rows.iter().map(|(_, r)| r.size()).sum::<usize>() >= PAGE_BYTES
    }

    /// Puts `row` at `seq`, in order; a row already there is replaced.
    fn put(&mut self, seq: u64, row: Row) {
        match self.rows.binary_search_by_key(&seq, |(s, _)| *s) {
            Ok(i) => self.rows[i].1 = row,
            Err(i) => self.rows.insert(i, (seq, row)),
        }
    }

    /// Drops the rows at `seqs`; how many were there.
    pub(super) fn remove(&mut self, seqs: &std::collections::HashSet<u64>) -> usize {
        let before = self.rows.len();
        self.rows.retain(|(s, _)| !seqs.contains(s));
        before - self.rows.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        enc(self)
    }
}

/// The last page of each webhook the index writer wrote to most recently, decoded, exactly as the tree
/// holds it after the last batch that was written: a batch that adds rows to a webhook, or records
/// attempts of its recent deliveries, starts from it instead of looking the page up and decoding it
/// again (in a fan-out most of a batch's rows are in its webhooks' last pages, rewritten batch after
/// batch).
///
/// Invariant: an entry is the webhook's last page in the tree. A batch takes the entries of the
/// webhooks it works on out, and the pages that are last once it is written go back in only after the
/// tree took the batch; a failed batch leaves them out (the next one reads the tree). Whatever else
/// changes the rows ([`super::DeliveryIndex::forget`], a deleted webhook) drops the entries first.
pub(super) struct Tails(lru::LruCache<WebhookId, (u64, Page)>);

impl Tails {
    pub(super) fn new() -> Self {
        Self(lru::LruCache::new(CACHED_TAILS))
    }

    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    /// Takes `webhook`'s kept last page out (a batch works on it; it comes back through [`Tails::keep`]).
    fn take(&mut self, webhook: &WebhookId) -> Option<(u64, Page)> {
        self.0.pop(webhook)
    }

    /// Keeps the last pages of a batch the tree took (from [`PageSet::write`]).
    pub(super) fn keep(&mut self, last_pages: Vec<LastPage>) {
        for LastPage { webhook, at, page } in last_pages {
            self.0.put(webhook, (at, page));
        }
    }
}

/// A webhook's last page after a batch: its key and rows.
pub(super) struct LastPage {
    webhook: WebhookId,
    at: u64,
    page: Page,
}

/// A webhook's pages that one batch read or made.
#[derive(Default)]
struct Loaded {
    pages: BTreeMap<u64, Page>,
    /// Keys of the pages this batch changed (written back by [`PageSet::write`]).
    dirty: BTreeSet<u64>,
    /// Once looked up: the key of the webhook's last page in the tree (`Some(None)`: it had none). Every
    /// tree page at or above it is then loaded, so a row past it needs no lookup.
    tree_last: Option<Option<u64>>,
}

/// The pages a batch of index changes works on, read from the tree when first needed and written back
/// together into the batch. Keyed by the webhook ids of the batch's changes, borrowed for as long as it
/// lives (no id is copied per change).
pub(super) struct PageSet<'t> {
    tree: &'t sled::Tree,
    tails: &'t mut Tails,
    webhooks: HashMap<&'t WebhookId, Loaded>,
}

impl<'t> PageSet<'t> {
    pub(super) fn new(tree: &'t sled::Tree, tails: &'t mut Tails) -> Self {
        Self {
            tree,
            tails,
            webhooks: HashMap::new(),
        }
    }

    /// The row at `webhook`'s `seq`, if it has one, for changing (its page is written back).
    pub(super) fn row_mut(
        &mut self,
        webhook: &'t WebhookId,
        seq: u64,
    ) -> Result<Option<&mut Row>, LogError> {
        let Some(at) = self.floor(webhook, seq)? else {
            return Ok(None);
        };
        let loaded = self.loaded(webhook);
        let Some(page) = loaded.pages.get_mut(&at) else {
            return Ok(None);
        };
        let row = page.get_mut(seq);
        if row.is_some() {
            loaded.dirty.insert(at);
        }
        Ok(row)
    }

    /// Puts `row` at `webhook`'s `seq` (replacing one there): in the page that holds that seq, or at the
    /// end of the webhook's last page while it has room, or in a new page that starts at `seq`.
    pub(super) fn put(
        &mut self,
        webhook: &'t WebhookId,
        seq: u64,
        row: Row,
    ) -> Result<(), LogError> {
        self.look_up_last(webhook)?;
        let at = self.floor(webhook, seq)?;
        let loaded = self.loaded(webhook);
        let into = match at.and_then(|k| loaded.pages.get(&k).map(|p| (k, p))) {
            Some((k, page))
                if page.last_seq().is_none_or(|last| seq <= last) || !page.is_full() =>
            {
                k
            }
            _ => seq,
        };
        loaded.pages.entry(into).or_default().put(seq, row);
        loaded.dirty.insert(into);
        Ok(())
    }

    /// Forgets what this batch did to `webhook`'s pages (it was deleted: its keys are removed).
    pub(super) fn drop_webhook(&mut self, webhook: &'t WebhookId) {
        self.webhooks.remove(webhook);
        self.tails.take(webhook);
    }

    /// Writes every changed page into `batch`, splitting one that grew past [`SPLIT_ROWS`]; returns the
    /// last page of each webhook whose last page is known, for [`Tails::keep`] once the tree took the
    /// batch.
    pub(super) fn write(self, batch: &mut sled::Batch) -> Vec<LastPage> {
        let mut last_pages = Vec::new();
        for (webhook, loaded) in self.webhooks {
            let Loaded {
                pages,
                dirty,
                tree_last,
            } = loaded;
            // Every page at or above the tree's last one is loaded, so the greatest page left with rows
            // is the last one after the batch, unless none is left at or above it.
            let last = tree_last.and_then(|tree_last| {
                pages
                    .iter()
                    .rev()
                    .find(|(_, page)| !page.is_empty())
                    .map(|(at, _)| *at)
                    .filter(|at| tree_last.is_none_or(|t| *at >= t))
            });
            for (at, page) in pages {
                let is_last = last == Some(at);
                if !dirty.contains(&at) {
                    if is_last {
                        last_pages.push(LastPage {
                            webhook: webhook.clone(),
                            at,
                            page,
                        });
                    }
                    continue;
                }
                if page.is_empty() {
                    batch.remove(key(webhook, at));
                    continue;
                }
                let (at, page) = write_split(batch, webhook, at, page);
                if is_last {
                    last_pages.push(LastPage {
                        webhook: webhook.clone(),
                        at,
                        page,
                    });
                }
            }
        }
        last_pages
    }

    /// `webhook`'s pages read or made by this batch; on its first use, the webhook's last page as
    /// [`Tails`] kept it, if it did.
    fn loaded(&mut self, webhook: &'t WebhookId) -> &mut Loaded {
        let tails = &mut *self.tails;
        self.webhooks.entry(webhook).or_insert_with(|| {
            let mut loaded = Loaded::default();
            if let Some((at, page)) = tails.take(webhook) {
                loaded.pages.insert(at, page);
                loaded.tree_last = Some(Some(at));
            }
            loaded
        })
    }

    /// Loads `webhook`'s last page, once per batch (new rows go after it).
    fn look_up_last(&mut self, webhook: &'t WebhookId) -> Result<(), LogError> {
        if self.loaded(webhook).tree_last.is_some() {
            return Ok(());
        }
        let last = floor_in(self.tree, webhook, u64::MAX)?;
        let loaded = self.loaded(webhook);
        loaded.tree_last = Some(last.as_ref().map(|(at, _)| *at));
        if let Some((at, v)) = last {
            loaded.pages.entry(at).or_insert_with(|| Page::decode(&v));
        }
        Ok(())
    }

    /// The key of the page that holds (or would hold) `webhook`'s `seq`, loaded: the greatest key at or
    /// below `seq`, among the pages loaded or made in this batch and those in the tree.
    fn floor(&mut self, webhook: &'t WebhookId, seq: u64) -> Result<Option<u64>, LogError> {
        let loaded = self.loaded(webhook);
        let near = loaded
            .pages
            .range(..=seq)
            .next_back()
            .map(|(k, p)| (*k, p.last_seq().is_some_and(|last| seq <= last)));
        // A loaded page whose rows reach `seq` is the one (pages are disjoint); past the tree's last
        // page, only loaded pages can hold it.
        if let Some((k, true)) = near {
            return Ok(Some(k));
        }
        if let Some(tree_last) = loaded.tree_last {
            if tree_last.is_none_or(|t| seq >= t) {
                return Ok(near.map(|(k, _)| k));
            }
        }
        let found = floor_in(self.tree, webhook, seq)?;
        let loaded = self.loaded(webhook);
        Ok(match (near.map(|(k, _)| k), found) {
            (Some(k), Some((at, _))) if k >= at => Some(k),
            (_, Some((at, v))) => {
                loaded.pages.entry(at).or_insert_with(|| Page::decode(&v));
                Some(at)
            }
            (near, None) => near,
        })
    }
}

/// Writes `webhook`'s page that starts at `at` into `batch`, in pages of [`PAGE_ROWS`] rows if it grew
/// past [`SPLIT_ROWS`]; returns the last of them and its key.
fn write_split(batch: &mut sled::Batch, webhook: &WebhookId, at: u64, page: Page) -> (u64, Page) {
    let mut rows = page.rows;
    let mut start = at;
    while rows.len() > SPLIT_ROWS {
        let rest = rows.split_off(PAGE_ROWS);
        batch.insert(key(webhook, start), Page { rows }.encode());
        rows = rest;
        start = rows.first().map_or(start, |(s, _)| *s);
    }
    let page = Page { rows };
    batch.insert(key(webhook, start), page.encode());
    (start, page)
}
