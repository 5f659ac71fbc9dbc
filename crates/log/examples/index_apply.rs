//! What the delivery index writer spends per delivery in a fan-out: events to 100 webhooks, each batch
//! queueing `per_batch` events' rows and recording the first attempts of the batch before, as the
//! index writer sees them under S3's load (a row queued, then attempted). Prints microseconds of wall
//! time per delivery for a few batch sizes. Compare two builds by running them one after the other,
//! several times (docs/BENCHMARKS.md, "The index writer keeps last pages decoded"):
//!
//! ```sh
//! cargo run --release -p buildr-log --example index_apply
//! ```
#![forbid(unsafe_code)]

use buildr_core::{AttemptOutcome, AttemptRecord, EventId, EventType, Timestamp, WebhookId};
use buildr_log::{EventLog, IndexOp};
use std::time::Instant;

const WEBHOOKS: usize = 100;
const EVENTS: u64 = 20_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("| events per batch | µs per delivery |");
    println!("|---:|---:|");
    for per_batch in [1u64, 4, 16, 64] {
        let dir = tempfile::tempdir()?;
        let (log, _) = EventLog::open(dir.path())?;
        let index = log.index()?;
        let hooks = (0..WEBHOOKS)
            .map(|i| format!("wh_01HZY00000000000000000{i:04}").parse())
            .collect::<Result<Vec<WebhookId>, _>>()?;
        let id: EventId = "evt_01HZY0000000000000000000AA".parse()?;
        let mut seq = 0u64;
        let mut previous: Vec<u64> = Vec::new();
        let started = Instant::now();
        let mut done = 0;
        while done < EVENTS {
            let mut ops = Vec::new();
            let first = seq + 1;
            for _ in 0..per_batch {
                seq += 1;
                ops.extend(hooks.iter().map(|webhook| IndexOp::Queued {
                    webhook: webhook.clone(),
                    seq,
                    event: Some((id.clone(), EventType::ContactCreate)),
                }));
            }
            for &event_seq in &previous {
                for webhook in &hooks {
                    seq += 1;
                    ops.push(IndexOp::Attempt {
                        record_seq: seq,
                        attempt: Box::new(AttemptRecord {
                            webhook: webhook.clone(),
                            seq: event_seq,
                            event_id: id.clone(),
                            attempt: 1,
                            at: Timestamp::from_millis(1_000),
                            response_status: Some(200),
                            response_body: String::new(),
                            error: None,
                            duration_ms: 1,
                            outcome: AttemptOutcome::Succeeded,
                        }),
                    });
                }
            }
            index.apply(&ops, seq, |_| None)?;
            previous = (first..first + per_batch).collect();
            done += per_batch;
        }
        let per_delivery =
            started.elapsed().as_secs_f64() * 1e6 / (EVENTS * WEBHOOKS as u64) as f64;
        println!("| {per_batch} | {per_delivery:.2} |");
    }
    Ok(())
}
