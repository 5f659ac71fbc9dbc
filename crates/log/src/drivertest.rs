//! The behaviour every [`LogStore`] must show, as one suite each implementation runs against itself (the
//! sled log in this crate's tests, the JetStream log against a real NATS cluster in `buildr-cluster`'s).
//! The engine relies on exactly these properties and nothing else of its storage.
//!
//! Each check returns `Err` with what was wrong, so a failure names the property and the implementation.

use crate::store::{Appended, Group, LogStore, Written};
use buildr_core::{
    AccountId, EventData, EventId, EventRecord, EventType, ObjectId, Record, Timestamp,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Makes the stores the suite runs against.
pub trait Driver {
    /// A fresh, empty log (each call a new one).
    fn fresh(&mut self) -> Result<Box<dyn LogStore>, String>;
    /// The log `fresh` made last, opened again as a restart would open it (the old handle is dropped first).
    fn reopen(&mut self) -> Result<Box<dyn LogStore>, String>;
    /// Another writer on the log `fresh` made last (its own node), if the implementation is shared by
    /// several writers; `None` for a log with one writer.
    fn second_writer(&mut self) -> Result<Option<Box<dyn LogStore>>, String>;
}

type Check = fn(&mut dyn Driver) -> Result<(), String>;

/// Every check, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("seqs_increase_and_read_back", seqs_increase_and_read_back),
    ("groups_get_consecutive_seqs", groups_get_consecutive_seqs),
    ("range_bounds", range_bounds),
    (
        "records_at_reads_the_seqs_asked",
        records_at_reads_the_seqs_asked,
    ),
    (
        "account_events_are_indexed_with_what_replays_decide_by",
        account_events_are_indexed_with_what_replays_decide_by,
    ),
    ("durable_across_reopen", durable_across_reopen),
    (
        "written_batches_are_durable_after_sync",
        written_batches_are_durable_after_sync,
    ),
    ("checkpoint_round_trips", checkpoint_round_trips),
    (
        "remove_keeps_order_and_the_last",
        remove_keeps_order_and_the_last,
    ),
    ("large_batches", large_batches),
    (
        "other_writers_are_handed_out_in_order",
        other_writers_are_handed_out_in_order,
    ),
    (
        "shared_logs_store_a_dedupe_id_once",
        shared_logs_store_a_dedupe_id_once,
    ),
];

/// Runs every check; the error lists each failing check with its reason.
pub fn run_all(driver: &mut dyn Driver) -> Result<(), String> {
    let failures: Vec<String> = CHECKS
        .iter()
        .filter_map(|(name, check)| check(driver).err().map(|e| format!("{name}: {e}")))
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// A distinct record (`n` is its data id, so reads can be matched to writes).
pub fn record(n: i64) -> Record {
    Record::EventPublished(EventRecord {
        id: EventId::generate(),
        account: AccountId::default_account(),
        event_type: EventType::ContactCreate,
        data: EventData {
            id: ObjectId::Int(n),
            url: format!("https://x.example/{n}"),
        },
        created_at: Timestamp::now(),
        only_webhook: None,
    })
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Opens `log` for appending as the engine does: following from `applied`.
fn follow(log: &dyn LogStore, applied: u64) -> Result<Arc<AtomicUsize>, String> {
    let notified = Arc::new(AtomicUsize::new(0));
    let n = notified.clone();
    log.follow(
        applied,
        Box::new(move || {
            n.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .map_err(err)?;
    Ok(notified)
}

fn append(log: &dyn LogStore, records: &[Record], groups: &[usize]) -> Result<Appended, String> {
    let groups: Vec<Group> = groups.iter().map(|&s| Group::at(s)).collect();
    let a = log
        .append_batch(records.to_vec(), &groups)
        .map_err(|r| r.error.to_string())?;
    ensure(a.seqs.len() == records.len(), || {
        format!("{} seqs for {} records", a.seqs.len(), records.len())
    })?;
    Ok(a)
}

fn all(log: &dyn LogStore) -> Result<Vec<(u64, Record)>, String> {
    log.tail(1).collect::<Result<Vec<_>, _>>().map_err(err)
}

fn seqs_increase_and_read_back(d: &mut dyn Driver) -> Result<(), String> {
    let log = d.fresh()?;
    follow(&*log, 0)?;
    ensure(log.last_seq() == 0, || "a fresh log is not empty".into())?;
    let recs: Vec<Record> = (0..10).map(record).collect();
    let a = append(&*log, &recs[..3], &[0])?;
    let b = append(&*log, &recs[3..], &[0, 2, 5])?;
    let seqs: Vec<u64> = a.seqs.iter().chain(&b.seqs).copied().collect();
    ensure(seqs[0] > 0, || "seq 0 was given out".into())?;
    ensure(seqs.windows(2).all(|w| w[0] < w[1]), || {
        format!("seqs do not increase: {seqs:?}")
    })?;
    // With one writer, the entries handed out are exactly the records written.
    let handed: Vec<(u64, Record)> = a.entries.into_iter().chain(b.entries).collect();
    ensure(
        handed.iter().map(|(s, _)| *s).collect::<Vec<_>>() == seqs,
        || "append did not hand out the records it wrote with their seqs".into(),
    )?;
    ensure(handed.iter().map(|(_, r)| r).eq(recs.iter()), || {
        "handed-out records differ from those written".into()
    })?;
    ensure(log.last_seq() == seqs[9], || {
        format!("last_seq {} after writing {}", log.last_seq(), seqs[9])
    })?;
    for (seq, r) in seqs.iter().zip(&recs) {
        ensure(log.get(*seq).map_err(err)?.as_ref() == Some(r), || {
            format!("get({seq}) is not what was written there")
        })?;
    }
    ensure(log.get(seqs[9] + 1).map_err(err)?.is_none(), || {
        "a seq past the end reads as a record".into()
    })?;
    let read = all(&*log)?;
    ensure(
        read.iter().map(|(s, _)| *s).eq(seqs.iter().copied()),
        || "tail(1) does not return every seq in order".into(),
    )?;
    ensure(log.catch_up(false).map_err(err)?.is_empty(), || {
        "catch_up hands out records already handed out".into()
    })
}

fn groups_get_consecutive_seqs(d: &mut dyn Driver) -> Result<(), String> {
    let log = d.fresh()?;
    follow(&*log, 0)?;
    let recs: Vec<Record> = (0..30).map(record).collect();
    let groups = [0, 1, 11, 12, 29];
    let a = append(&*log, &recs, &groups)?;
    for (i, g) in groups.iter().enumerate() {
        let end = groups.get(i + 1).copied().unwrap_or(recs.len());
        for k in *g..end {
            ensure(a.seqs[k] == a.seqs[*g] + (k - g) as u64, || {
                format!(
                    "group at {g}: seqs {:?} are not consecutive",
                    &a.seqs[*g..end]
                )
            })?;
        }
    }
    Ok(())
}

fn range_bounds(d: &mut dyn Driver) -> Result<(), String> {
    let log = d.fresh()?;
    follow(&*log, 0)?;
    let recs: Vec<Record> = (0..6).map(record).collect();
    let s = append(&*log, &recs, &[0, 3])?.seqs;
    let got = |from, to| -> Result<Vec<u64>, String> {
        log.range(from, to)
            .map(|r| r.map(|(seq, _)| seq))
            .collect::<Result<_, _>>()
            .map_err(err)
    };
    ensure(got(s[1], s[4])? == s[1..4], || {
        "range(from, to) is not from inclusive, to exclusive".into()
    })?;
    ensure(got(s[4], s[1])?.is_empty(), || {
        "an inverted range is not empty".into()
    })?;
    ensure(got(0, u64::MAX)? == s, || {
        "the whole range is not every record".into()
    })?;
    ensure(got(s[5] + 1, u64::MAX)?.is_empty(), || {
        "a range past the end is not empty".into()
    })
}

fn records_at_reads_the_seqs_asked(d: &mut dyn Driver) -> Result<(), String> {
    let log = d.fresh()?;
    follow(&*log, 0)?;
    let recs: Vec<Record> = (0..200).map(record).collect();
    let s = append(&*log, &recs, &[0])?.seqs;
    // Dense runs (read by range), lone seqs far apart (read one by one), a seq that has no record and
    // one past the end: each record asked for comes back once, in order, and nothing else.
    let missing = s[199] + 1_000;
    let mut asked: Vec<u64> = s[..40].iter().step_by(3).copied().collect();
    asked.extend([s[100], s[150], s[151], s[152], s[190], s[199], missing]);
    let got: Vec<(u64, Record)> = log
        .records_at(&asked)
        .collect::<Result<_, _>>()
        .map_err(err)?;
    let want: Vec<(u64, Record)> = asked
        .iter()
        .filter_map(|seq| {
            s.iter()
                .position(|x| x == seq)
                .map(|i| (*seq, recs[i].clone()))
        })
        .collect();
    ensure(got == want, || {
        format!(
            "records_at({asked:?}) gave seqs {:?}",
            got.iter().map(|(s, _)| s).collect::<Vec<_>>()
        )
    })?;
    let none = log.records_at(&[]).count();
    ensure(none == 0, || format!("records_at(&[]) gave {none} records"))
}

fn account_events_are_indexed_with_what_replays_decide_by(
    d: &mut dyn Driver,
) -> Result<(), String> {
    let log = d.fresh()?;
    follow(&*log, 0)?;
    let other: AccountId = "acc_driver_other".parse().map_err(err)?;
    let webhook: buildr_core::WebhookId = "wh_driver_test".parse().map_err(err)?;
    let types = [EventType::ContactCreate, EventType::CompanyUpdate];
    let recs: Vec<Record> = (0..6)
        .map(|n| {
            let mut r = record(n);
            if let Record::EventPublished(e) = &mut r {
                e.event_type = types[n as usize % 2];
                if n == 3 {
                    e.account = other.clone();
                }
                if n == 4 {
                    e.only_webhook = Some(webhook.clone());
                }
            }
            r
        })
        .collect();
    let s = append(&*log, &recs, &[0])?.seqs;
    let want: Vec<crate::EventRef> = s
        .iter()
        .zip(&recs)
        .filter_map(|(seq, r)| match r {
            Record::EventPublished(e) if e.account == AccountId::default_account() => {
                Some(crate::EventRef {
                    seq: *seq,
                    summary: Some(crate::EventSummary::of(e)),
                })
            }
            _ => None,
        })
        .collect();
    let account = AccountId::default_account();
    let by_time = log
        .account_events_between(&account, Timestamp::from_millis(0), None)
        .map_err(err)?;
    ensure(by_time == want, || {
        format!("account_events_between gave {by_time:?}, expected {want:?}")
    })?;
    let by_seq: Vec<crate::EventRef> = log
        .account_event_refs(&account, 0)
        .collect::<Result<_, _>>()
        .map_err(err)?;
    ensure(by_seq == want, || {
        format!("account_event_refs gave {by_seq:?}, expected {want:?}")
    })?;
    let after: Vec<u64> = log
        .account_event_refs(&account, s[2])
        .map(|r| r.map(|r| r.seq))
        .collect::<Result<_, _>>()
        .map_err(err)?;
    ensure(after == vec![s[4], s[5]], || {
        format!("account_event_refs after {} gave {after:?}", s[2])
    })
}

fn durable_across_reopen(d: &mut dyn Driver) -> Result<(), String> {
    let recs: Vec<Record> = (0..5).map(record).collect();
    let seqs = {
        let log = d.fresh()?;
        follow(&*log, 0)?;
        append(&*log, &recs, &[0])?.seqs
    };
    let log = d.reopen()?;
    let read = all(&*log)?;
    ensure(
        read.iter().map(|(s, _)| *s).eq(seqs.iter().copied()),
        || {
            format!(
                "after reopening: seqs {:?}, written {seqs:?}",
                read.iter().map(|(s, _)| s).collect::<Vec<_>>()
            )
        },
    )?;
    ensure(read.iter().map(|(_, r)| r).eq(recs.iter()), || {
        "after reopening the records differ".into()
    })?;
    ensure(log.last_seq() == seqs[4], || {
        "last_seq changed across reopen".into()
    })?;
    follow(&*log, seqs[4])?;
    let next = append(&*log, &[record(99)], &[0])?;
    ensure(next.seqs[0] > seqs[4], || {
        format!(
            "after reopening the next seq {} is not above {}",
            next.seqs[0], seqs[4]
        )
    })?;
    ensure(next.entries.len() == 1, || {
        format!(
            "{} entries handed out after following from the end",
            next.entries.len()
        )
    })
}

/// Batches written without waiting ([`LogStore::write_batch`]) while a sync runs on another thread:
/// seqs follow the write order, `last_seq` never counts an unsynced batch, a sync covers every batch
/// written before it, and after a reopen everything synced is there in order.
fn written_batches_are_durable_after_sync(d: &mut dyn Driver) -> Result<(), String> {
    let first = record(-1);
    let recs: Vec<Record> = (0..30).map(record).collect();
    let mut written = Vec::new();
    {
        let log: Arc<dyn LogStore> = Arc::from(d.fresh()?);
        follow(&*log, 0)?;
        // Alone first: an unsynced batch is not counted until a sync.
        match log.write_batch(vec![first.clone()], &[Group::at(0)]) {
            Ok(Written::Unsynced(a)) => {
                ensure(log.last_seq() < a.seqs[0], || {
                    "last_seq counts a batch nobody synced".into()
                })?;
                ensure(log.sync().map_err(err)? >= a.seqs[0], || {
                    "a sync does not cover the batch written before it".into()
                })?;
                ensure(log.last_seq() >= a.seqs[0], || {
                    "last_seq does not count a synced batch".into()
                })?;
                written.extend(a.seqs);
            }
            Ok(Written::Durable(a)) => written.extend(a.seqs),
            Err(r) => return Err(r.error.to_string()),
        }
        let syncer = {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..20)
                    .map(|_| log.sync().map_err(err))
                    .collect::<Result<Vec<u64>, String>>()
            })
        };
        let mut last_written = 0;
        for chunk in recs.chunks(3) {
            let groups = [Group::at(0), Group::at(2)];
            let (unsynced, a) = match log.write_batch(chunk.to_vec(), &groups) {
                Ok(Written::Durable(a)) => (false, a),
                Ok(Written::Unsynced(a)) => (true, a),
                Err(r) => return Err(r.error.to_string()),
            };
            ensure(a.seqs.len() == chunk.len(), || {
                format!("{} seqs for {} records", a.seqs.len(), chunk.len())
            })?;
            ensure(a.seqs.windows(2).all(|w| w[0] < w[1]), || {
                format!("seqs {:?} do not increase", a.seqs)
            })?;
            ensure(a.seqs[0] > last_written, || {
                format!("batch starts at {} after {last_written}", a.seqs[0])
            })?;
            last_written = a.seqs[chunk.len() - 1];
            if !unsynced {
                ensure(log.last_seq() >= last_written, || {
                    "a durable batch is not counted by last_seq".into()
                })?;
            }
            written.extend(a.seqs);
        }
        let synced = syncer
            .join()
            .map_err(|_| "the syncing thread panicked".to_owned())??;
        ensure(synced.windows(2).all(|w| w[0] <= w[1]), || {
            format!("sync went backwards: {synced:?}")
        })?;
        let through = log.sync().map_err(err)?;
        ensure(
            through >= last_written && log.last_seq() >= last_written,
            || {
                format!(
                "after the last sync: through {through}, last_seq {}, written up to {last_written}",
                log.last_seq()
            )
            },
        )?;
    }
    let log = d.reopen()?;
    let read = all(&*log)?;
    ensure(
        read.iter().map(|(s, _)| *s).eq(written.iter().copied()),
        || {
            format!(
                "after reopening: seqs {:?}, written {written:?}",
                read.iter().map(|(s, _)| s).collect::<Vec<_>>()
            )
        },
    )?;
    ensure(
        read.iter()
            .map(|(_, r)| r)
            .eq(std::iter::once(&first).chain(&recs)),
        || "after reopening the records differ".into(),
    )
}

fn checkpoint_round_trips(d: &mut dyn Driver) -> Result<(), String> {
    {
        let log = d.fresh()?;
        follow(&*log, 0)?;
        ensure(log.load_checkpoint().map_err(err)?.is_none(), || {
            "a fresh log has a checkpoint".into()
        })?;
        let s = append(&*log, &[record(1)], &[0])?.seqs[0];
        log.save_checkpoint(s, b"state").map_err(err)?;
        ensure(
            log.load_checkpoint().map_err(err)? == Some((s, b"state".to_vec())),
            || "the checkpoint does not read back".into(),
        )?;
    }
    let log = d.reopen()?;
    ensure(
        log.load_checkpoint().map_err(err)?.map(|(_, b)| b) == Some(b"state".to_vec()),
        || "the checkpoint did not survive reopening".into(),
    )
}

fn remove_keeps_order_and_the_last(d: &mut dyn Driver) -> Result<(), String> {
    let log = d.fresh()?;
    follow(&*log, 0)?;
    let recs: Vec<Record> = (0..6).map(record).collect();
    // One record per group, in separate appends: a log that stores a message per append can remove each.
    let mut s = Vec::new();
    for r in &recs {
        s.extend(append(&*log, std::slice::from_ref(r), &[0])?.seqs);
    }
    let removed = log.remove(&[s[1], s[3], s[5], s[5] + 1000]).map_err(err)?;
    ensure(removed == 2, || {
        format!("removed {removed}, expected 2 (never the last one)")
    })?;
    ensure(log.get(s[1]).map_err(err)?.is_none(), || {
        "a removed record still reads".into()
    })?;
    let left: Vec<u64> = all(&*log)?.into_iter().map(|(seq, _)| seq).collect();
    ensure(left == [s[0], s[2], s[4], s[5]], || {
        format!("left {left:?}")
    })?;
    ensure(log.last_seq() == s[5], || {
        "removing changed last_seq".into()
    })?;
    let next = append(&*log, &[record(7)], &[0])?.seqs[0];
    ensure(next > s[5], || "a seq was reused after a removal".into())
}

fn large_batches(d: &mut dyn Driver) -> Result<(), String> {
    let log = d.fresh()?;
    follow(&*log, 0)?;
    let recs: Vec<Record> = (0..3_001).map(record).collect();
    let groups: Vec<usize> = (0..recs.len()).step_by(1_000).collect();
    let a = append(&*log, &recs, &groups)?;
    ensure(a.entries.len() == recs.len(), || {
        format!("{} entries for {} records", a.entries.len(), recs.len())
    })?;
    let read = all(&*log)?;
    ensure(
        read.len() == recs.len() && read.iter().map(|(_, r)| r).eq(recs.iter()),
        || {
            format!(
                "read back {} of {} records (or out of order)",
                read.len(),
                recs.len()
            )
        },
    )
}

/// Waits (bounded) until `log` hands out `want` records by catch_up.
fn catch_up_until(log: &dyn LogStore, want: usize) -> Result<Vec<(u64, Record)>, String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < want && Instant::now() < deadline {
        got.extend(log.catch_up(false).map_err(err)?);
        if got.len() < want {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    ensure(got.len() == want, || {
        format!("caught up {} of {want} records", got.len())
    })?;
    Ok(got)
}

fn other_writers_are_handed_out_in_order(d: &mut dyn Driver) -> Result<(), String> {
    let a = d.fresh()?;
    let a_notified = follow(&*a, 0)?;
    let Some(b) = d.second_writer()? else {
        return Ok(());
    };
    follow(&*b, 0)?;
    let from_b = append(&*b, &[record(1), record(2)], &[0])?;
    // A is told, and hands out B's records in order…
    let got = catch_up_until(&*a, 2)?;
    ensure(
        got.iter().map(|(s, _)| *s).eq(from_b.seqs.iter().copied()),
        || "another writer's records are handed out with other seqs".into(),
    )?;
    ensure(a_notified.load(Ordering::SeqCst) > 0, || {
        "follow's notify was never called".into()
    })?;
    // …and an append hands out what the other wrote since, before its own records.
    let more_b = append(&*b, &[record(3)], &[0])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.last_seq() < more_b.seqs[0] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let own = append(&*a, &[record(4)], &[0])?;
    let handed: Vec<u64> = own.entries.iter().map(|(s, _)| *s).collect();
    ensure(handed == [more_b.seqs[0], own.seqs[0]], || {
        format!(
            "append handed out {handed:?}, expected B's {} then its own {}",
            more_b.seqs[0], own.seqs[0]
        )
    })?;
    ensure(a.catch_up(false).map_err(err)?.is_empty(), || {
        "records handed out twice".into()
    })?;
    // Both see one log.
    catch_up_until(&*b, 1)?;
    let (la, lb) = (all(&*a)?, all(&*b)?);
    ensure(la == lb && la.len() == 4, || {
        "the writers see different logs".into()
    })?;
    // A start-up catch-up returns immediately when there is nothing new.
    ensure(a.catch_up(true).map_err(err)?.is_empty(), || {
        "catch_up(to_end) invented records".into()
    })
}

/// On a log shared by several writers, two appends of a group with the same dedupe id (from two writers)
/// store it once; the second is told, and both see the first one's records.
fn shared_logs_store_a_dedupe_id_once(d: &mut dyn Driver) -> Result<(), String> {
    let a = d.fresh()?;
    follow(&*a, 0)?;
    let Some(b) = d.second_writer()? else {
        return Ok(());
    };
    follow(&*b, 0)?;
    let groups = |id: &str| {
        vec![
            Group::at(0),
            Group {
                start: 1,
                dedupe_id: Some(id.to_owned()),
            },
        ]
    };
    let first = a
        .append_batch(vec![record(1), record(2), record(3)], &groups("key-1"))
        .map_err(|r| r.error.to_string())?;
    ensure(first.duplicates.is_empty(), || {
        "a first use was reported as a duplicate".into()
    })?;
    let second = b
        .append_batch(vec![record(4), record(5), record(6)], &groups("key-1"))
        .map_err(|r| r.error.to_string())?;
    ensure(second.duplicates == [1], || {
        format!(
            "the second use of the id: duplicates {:?}, expected [1]",
            second.duplicates
        )
    })?;
    let got: Vec<Option<i64>> = all(&*b)?.iter().map(|(_, r)| data_id(r)).collect();
    let want = [Some(1), Some(2), Some(3), Some(4)];
    ensure(got == want, || {
        format!("stored data ids {got:?}, expected {want:?}")
    })
}

fn data_id(r: &Record) -> Option<i64> {
    match r {
        Record::EventPublished(e) => match e.data.id {
            ObjectId::Int(n) => Some(n),
            _ => None,
        },
        _ => None,
    }
}

/// The sled log's driver: each fresh log in a new subdirectory of `base` (the caller's temp dir).
pub struct SledDriver {
    base: std::path::PathBuf,
    made: usize,
}

impl SledDriver {
    pub fn new(base: &std::path::Path) -> Self {
        Self {
            base: base.to_path_buf(),
            made: 0,
        }
    }

    fn dir(&self) -> std::path::PathBuf {
        self.base.join(self.made.to_string())
    }
}

impl Driver for SledDriver {
    fn fresh(&mut self) -> Result<Box<dyn LogStore>, String> {
        self.made += 1;
        let (log, _) = crate::EventLog::open(&self.dir()).map_err(err)?;
        Ok(Box::new(log))
    }

    fn reopen(&mut self) -> Result<Box<dyn LogStore>, String> {
        let (log, _) = crate::EventLog::open(&self.dir()).map_err(err)?;
        Ok(Box::new(log))
    }

    fn second_writer(&mut self) -> Result<Option<Box<dyn LogStore>>, String> {
        Ok(None)
    }
}
