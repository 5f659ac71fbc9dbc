//! `buildr-bench-cluster`: the driver of `make bench-cluster` (issue 11). Starts a 3-server JetStream
//! cluster (sync_interval: always) and the counting receiver, measures L-nats, runs S1 and S3 on one sled
//! node (the same run's reference), then S1 and S3 on 1, 2 and 3 cluster nodes and the recovery after a
//! node's kill; prints one row per figure, writes `target/bench/cluster.json` and ends with a Markdown
//! table (docs/SCALING.md). Like `make bench`, it never fails on speed.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use buildr_bench::api::{self, ReceiverApi};
use buildr_bench::cluster::{lnats, scenarios as cluster};
use buildr_bench::procs::{Binaries, Receiver};
use buildr_bench::report::{self, Row};
use buildr_bench::scenarios::{self, Baselines, Ctx, Sizes};
use buildr_bench::{baseline, machine};
use buildr_cluster::testkit::NatsCluster;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "buildr-bench-cluster",
    about = "Cluster-mode benchmarks of the real buildr-webhooks binary (make bench-cluster)"
)]
struct Cli {
    /// Every scenario small: a smoke run that checks the bench still works.
    #[arg(long)]
    quick: bool,
    /// The server's config file.
    #[arg(long, default_value = "config/bench.toml")]
    config: PathBuf,
    #[arg(long, default_value = "target/bench/cluster.json")]
    out: PathBuf,
    /// `cluster.lease_ttl` of the recovery scenario, in seconds.
    #[arg(long, default_value_t = 10)]
    lease_ttl: u64,
    /// Only the recovery scenario (C-recovery), e.g. to look at a takeover again.
    #[arg(long)]
    recovery_only: bool,
    /// Only the fan-out rows (sled S3, then C-S3 on 1, 2 and 3 nodes): CPU per delivery, e.g. to compare
    /// two builds.
    #[arg(long)]
    fan_out_only: bool,
    /// Fan-out rounds (sled S3, then C-S3 on 1, 2 and 3 nodes, in turn): the fan-out rows and their CPU
    /// ratio to sled are the medians over them (one round's ratio moves ±30 % on a shared machine).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Profile with `perf record` into DIR: sled S3's server (`s3.perf.data`, from its start) and each
    /// node of every C-S3 row while the load runs (`C-S3-<n>-node-<i>.perf.data`).
    #[arg(long, value_name = "DIR")]
    perf: Option<PathBuf>,
}

fn beside_me(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this binary's path")?;
    Ok(exe
        .parent()
        .context("this binary has no directory")?
        .join(name))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let bins = Binaries {
        server: beside_me("buildr-webhooks")?,
        receiver: beside_me("buildr-bench-receiver")?,
        config: cli.config.clone(),
    };
    for p in [&bins.server, &bins.receiver, &bins.config] {
        anyhow::ensure!(
            p.exists(),
            "{} is missing (make bench-cluster builds the binaries; run from the repository root)",
            p.display()
        );
    }
    anyhow::ensure!(
        buildr_cluster::testkit::nats_server().exists(),
        "nats-server is missing: run `make nats-server` (make bench-cluster does)"
    );
    actix_rt::System::new().block_on(run(cli, bins))
}

/// The median row of a scenario's rounds, or its last failure when a round failed (a median of fewer
/// rounds than asked would hide it).
fn median_or_failure(runs: Vec<Row>, median: impl FnOnce(Vec<Row>) -> Option<Row>) -> Option<Row> {
    match runs.iter().rposition(|r| r.error().is_some()) {
        Some(failed) => runs.into_iter().nth(failed),
        None => median(runs),
    }
}

/// A fan-out row's CPU per 1,000 deliveries and its ratio to sled, with every round's (C-S3 rows only).
fn cpu_line(row: &Row) -> Option<String> {
    if !row.id.starts_with("C-S3/") {
        return None;
    }
    let figures = |key: &str, digits: usize| -> String {
        let one = |v: &serde_json::Value| {
            v.as_f64()
                .map_or("-".to_owned(), |f| format!("{f:.digits$}"))
        };
        match row.extra.get(key) {
            Some(serde_json::Value::Array(vs)) => vs.iter().map(one).collect::<Vec<_>>().join(", "),
            Some(v) => one(v),
            None => "-".to_owned(),
        }
    };
    Some(format!(
        "CPU s per 1,000 deliveries, all nodes: {} (rounds {}); to sled: {} (rounds {})",
        figures("cpu_s_per_1k_deliveries_all_nodes", 4),
        figures("cpu_s_per_1k_deliveries_runs", 4),
        figures("cpu_ratio_to_sled", 2),
        figures("cpu_ratio_to_sled_runs", 2),
    ))
}

/// Keeps a failed row in the table (with its error) instead of stopping the run.
fn row_or_error(id: &str, r: Result<Row>) -> Row {
    r.unwrap_or_else(|e| {
        eprintln!("{id} failed: {e:#}");
        Row::new(id, "failed to run", 0.0, "").extra("error", format!("{e:#}"))
    })
}

async fn run(cli: Cli, bins: Binaries) -> Result<()> {
    let mut sizes = if cli.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    sizes.repeats = 1;
    let mode = if cli.quick { "quick" } else { "full" };
    let rounds = if cli.quick { 1 } else { cli.rounds };
    let load_start = machine::load_average();
    let machine = machine::describe();
    println!("buildr-bench-cluster ({mode}) on {machine}");
    let work = tempfile::Builder::new()
        .prefix("buildr-bench-cluster-")
        .tempdir()
        .context("cannot make a work dir")?;
    let receiver_proc = Receiver::start(&bins.receiver, 20_000)?;
    let receiver = ReceiverApi::new(api::client(8), &receiver_proc.base);
    println!("starting a 3-server JetStream cluster (sync_interval: always)…");
    let nats = NatsCluster::start(3);
    let urls = nats.urls();
    println!("measuring the limits (L-nats, L-http, L-disk)…");
    let lnats_messages = if cli.quick { 200 } else { 5_000 };
    let (batch, clients) = (sizes.s1_batch_size as usize, sizes.clients);
    let (l_nats_batch, l_nats_single) = if cli.recovery_only || cli.fan_out_only {
        (0.0, 0.0)
    } else {
        (
            lnats::l_nats(&urls, lnats_messages, batch, 4)?,
            lnats::l_nats(&urls, lnats_messages * 4, 1, clients)?,
        )
    };
    let l_http_one = baseline::l_http(&receiver, sizes.l_http_requests, 32).await?;
    let l_http_many = baseline::l_http(&receiver, sizes.l_http_requests, 256).await?;
    let baselines = Baselines {
        disk_batch: baseline::l_disk(sizes.l_disk_records, batch)?,
        disk_single: baseline::l_disk(sizes.l_disk_records / 4, clients)?,
        http_one: l_http_one.rate(),
        http_many: l_http_many.rate(),
    };
    let mut rows = vec![
        Row::new(
            "L-nats-batch",
            &format!("raw JetStream R3 publishes, {batch} records/message, 4 in flight"),
            l_nats_batch,
            "records/s",
        ),
        Row::new(
            "L-nats-single",
            &format!("raw JetStream R3 publishes, 1 record/message, {clients} in flight"),
            l_nats_single,
            "records/s",
        ),
    ];
    for r in &rows {
        println!("{}", r.line());
    }
    let ctx = Ctx {
        bins,
        receiver,
        sizes,
        baselines,
        work_dir: work.path().to_path_buf(),
        perf_dir: cli.perf.clone(),
        latency_dump: None,
        server_env: Vec::new(),
    };
    let save = |rows: &[Row]| {
        report::write_json(
            &cli.out,
            &machine,
            mode,
            [&load_start, &machine::load_average()],
            rows,
        )
    };
    if !cli.recovery_only {
        // The single-node sled reference of the same run, then each cluster size.
        if !cli.fan_out_only {
            for (id, r) in [
                ("S1-batch", scenarios::s1_batch(&ctx).await),
                ("S1-single", scenarios::s1_single(&ctx).await),
            ] {
                let row = row_or_error(id, r);
                println!("{}", row.line());
                rows.push(row);
                save(&rows)?;
            }
            for n in 1..=3 {
                for (id, r) in [
                    (
                        format!("C-S1-batch/{n}"),
                        cluster::s1_batch(&ctx, &nats, n, l_nats_batch).await,
                    ),
                    (
                        format!("C-S1-single/{n}"),
                        cluster::s1_single(&ctx, &nats, n, l_nats_single).await,
                    ),
                ] {
                    let row = row_or_error(&id, r);
                    println!("{}", row.line());
                    rows.push(row);
                    save(&rows)?;
                }
            }
        }
        // Fan-out in rounds: sled S3, then C-S3 on 1, 2 and 3 nodes, each compared with the sled run of
        // its own round; the rows are the medians over the rounds (`cluster::fan_out_median`).
        let mut sled_rows = Vec::new();
        let mut sled_rounds = Vec::new();
        let mut cluster_runs: [Vec<Row>; 3] = Default::default();
        for round in 1..=rounds {
            let sled_row = row_or_error("S3", scenarios::s3(&ctx).await);
            println!("  round {round}/{rounds}: {}", sled_row.line());
            let sled = cluster::Sled::of(&sled_row);
            let failed = sled_row.error().is_some();
            sled_rows.push(sled_row);
            if failed {
                continue;
            }
            sled_rounds.push(sled);
            for (n, runs) in (1..=3).zip(cluster_runs.iter_mut()) {
                let id = format!("C-S3/{n}");
                let row = row_or_error(&id, cluster::s3(&ctx, &nats, n, round, sled).await);
                println!("  round {round}/{rounds}: {}", row.line());
                runs.push(row);
            }
        }
        let sled = cluster::Sled::median_of(&sled_rounds);
        let mut fan_out = Vec::new();
        fan_out.extend(median_or_failure(sled_rows, report::median_of));
        for (n, runs) in (1..=3).zip(cluster_runs) {
            fan_out.extend(median_or_failure(runs, |runs| {
                cluster::fan_out_median(n, runs, sled)
            }));
        }
        for row in fan_out {
            println!("{}", row.line());
            if let Some(cpu) = cpu_line(&row) {
                println!("          {cpu}");
            }
            rows.push(row);
        }
        save(&rows)?;
    }
    if cli.fan_out_only {
        drop(nats);
        drop(receiver_proc);
        print!("{}", report::markdown(&rows));
        return Ok(());
    }
    let row = row_or_error(
        "C-recovery",
        cluster::recovery(&ctx, &nats, cli.lease_ttl).await,
    );
    println!("{}", row.line());
    rows.push(row);
    save(&rows)?;
    drop(nats);
    drop(receiver_proc);
    println!("\nresults: {}\n", cli.out.display());
    println!(
        "Machine: {machine}; load average at start {load_start}, at end {}\n",
        machine::load_average()
    );
    print!("{}", report::markdown(&rows));
    Ok(())
}
