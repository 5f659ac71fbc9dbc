//! **L-nats**: raw JetStream publishes to a stream like the cluster's (R3, file storage, on the same
//! 3-server cluster with `sync_interval: always`), each message a batch of the server's event records in
//! its own framing (`buildr_cluster::message`): the ceiling for cluster-mode ingest, measured in the same
//! run. `in_flight` publishes are awaited together, as the nodes' writers and their concurrent callers do.

use crate::baseline::sample_record;
use anyhow::{Context, Result};
use std::time::{Duration, Instant};

/// Records per second for `messages` publishes of `per_message` records each, `in_flight` at a time (on a
/// thread and runtime of its own, away from the driver's).
pub fn l_nats(urls: &[String], messages: u64, per_message: usize, in_flight: usize) -> Result<f64> {
    let urls = urls.to_vec();
    std::thread::spawn(move || measure(&urls, messages, per_message, in_flight))
        .join()
        .map_err(|_| anyhow::anyhow!("L-nats: the measuring thread panicked"))?
}

fn measure(urls: &[String], messages: u64, per_message: usize, in_flight: usize) -> Result<f64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("L-nats: cannot start a tokio runtime")?;
    let record = sample_record(100_000);
    let payload = bytes::Bytes::from(buildr_cluster::message::encode(std::iter::repeat_n(
        record.as_slice(),
        per_message.max(1),
    )));
    let addrs = urls
        .iter()
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .context("L-nats: a bad server URL")?;
    rt.block_on(async move {
        let client = async_nats::ConnectOptions::new()
            .connect(addrs.as_slice())
            .await
            .context("L-nats: cannot connect")?;
        let js = async_nats::jetstream::new(client);
        let name = format!("lnats{per_message}x{in_flight}");
        let _ = js.delete_stream(&name).await;
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.log")],
            num_replicas: 3,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("L-nats: cannot create the stream")?;
        let subject = format!("{name}.log");
        let started = Instant::now();
        let mut sent = 0u64;
        while sent < messages {
            let n = (messages - sent).min(in_flight.max(1) as u64);
            let mut acks = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
            for _ in 0..n {
                acks.push(
                    js.publish(subject.clone(), payload.clone())
                        .await
                        .context("L-nats: publish")?,
                );
            }
            for ack in acks {
                tokio::time::timeout(Duration::from_secs(30), ack)
                    .await
                    .context("L-nats: no ack within 30 s")?
                    .context("L-nats: ack")?;
            }
            sent += n;
        }
        let rate = (messages * per_message.max(1) as u64) as f64
            / started.elapsed().as_secs_f64().max(1e-9);
        let _ = js.delete_stream(&name).await;
        Ok(rate)
    })
}
