//! `buildr-bench`: the driver of `make bench` (issue 5). Starts the counting receiver, measures the
//! machine's limits (L-disk, L-http), then runs S1–S8 against the real server binary, each on a fresh data
//! dir, printing one row per scenario, writing `target/bench/results.json` and ending with a Markdown
//! table. It never fails on speed: only a broken set-up stops it.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use buildr_bench::api::{self, ReceiverApi};
use buildr_bench::procs::{Binaries, Receiver};
use buildr_bench::report::{self, Row};
use buildr_bench::scenarios::{self, Baselines, Ctx, Sizes};
use buildr_bench::{baseline, machine};
use clap::Parser;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "buildr-bench",
    about = "Benchmarks of the real buildr-webhooks binary (make bench)"
)]
struct Cli {
    /// Every scenario small: a smoke run that checks the bench still works.
    #[arg(long)]
    quick: bool,
    /// Only these scenarios (comma-separated ids, e.g. `S2,S4`); default all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The server binary (default: `buildr-webhooks` beside this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The receiver binary (default: `buildr-bench-receiver` beside this binary).
    #[arg(long)]
    receiver_bin: Option<PathBuf>,
    /// The server's config file.
    #[arg(long, default_value = "config/bench.toml")]
    config: PathBuf,
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// Profile each scenario's server with `perf record` into DIR/<scenario>.perf.data.
    #[arg(long, value_name = "DIR")]
    perf: Option<PathBuf>,
    /// S4 and S4a write every sample into DIR/<scenario>.tsv: its publish start (Unix ms) and latency in ms (to tell stalls from queueing).
    #[arg(long, value_name = "DIR")]
    latency_dump: Option<PathBuf>,
    /// Extra environment for every server, e.g. `BUILDR_DELIVERY__TIMEOUT=2s` (repeatable; experiments).
    #[arg(long = "server-env", value_name = "KEY=VALUE")]
    server_env: Vec<String>,
    /// Overrides S5's webhook count (experiments and profiling).
    #[arg(long, value_name = "N")]
    s5_webhooks: Option<u64>,
    /// Overrides how many replay requests S8 times.
    #[arg(long, value_name = "N")]
    s8_replays: Option<u64>,
    /// A pause between S8's replay requests, in ms (default none: back to back), to tell a request's own
    /// time from the work the previous one left behind (experiments).
    #[arg(long, value_name = "MS")]
    s8_replay_gap_ms: Option<u64>,
}

fn beside_me(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this binary's path")?;
    let dir = exe.parent().context("this binary has no directory")?;
    Ok(dir.join(name))
}

fn existing(path: PathBuf, hint: &str) -> Result<PathBuf> {
    anyhow::ensure!(path.exists(), "{} is missing: {hint}", path.display());
    Ok(path)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let build_hint = "build it first (`make bench` does: cargo build --release -p buildr-server -p buildr-bench)";
    let bins = Binaries {
        server: existing(
            cli.server_bin
                .clone()
                .map_or_else(|| beside_me("buildr-webhooks"), Ok)?,
            build_hint,
        )?,
        receiver: existing(
            cli.receiver_bin
                .clone()
                .map_or_else(|| beside_me("buildr-bench-receiver"), Ok)?,
            build_hint,
        )?,
        config: existing(
            cli.config.clone(),
            "run from the repository root or pass --config",
        )?,
    };
    actix_rt::System::new().block_on(run(cli, bins))
}

fn wanted(only: &[String], id: &str) -> bool {
    only.is_empty()
        || only
            .iter()
            .any(|o| o.eq_ignore_ascii_case(id) || id.starts_with(o.as_str()))
}

async fn run(cli: Cli, bins: Binaries) -> Result<()> {
    let mut sizes = if cli.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(n) = cli.s8_replays {
        sizes.s8_replays = n;
    }
    if let Some(ms) = cli.s8_replay_gap_ms {
        sizes.s8_replay_gap_ms = ms;
    }
    if let Some(n) = cli.s5_webhooks {
        sizes.s5_webhooks = n;
    }
    let server_env = cli
        .server_env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--server-env {kv}: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    let load_start = machine::load_average();
    let mode = if cli.quick { "quick" } else { "full" };
    let machine = machine::describe();
    println!("buildr-bench ({mode}) on {machine}");
    let work = tempfile::Builder::new()
        .prefix("buildr-bench-")
        .tempdir()
        .context("cannot make a work dir")?;
    // Longer than the server's delivery timeout (15 s), so S7's bad receiver really times out.
    let receiver_proc = Receiver::start(&bins.receiver, 20_000)?;
    let receiver = ReceiverApi::new(api::client(8), &receiver_proc.base);

    println!("measuring the machine's limits (L-disk, L-http)…");
    let l_http_one = baseline::l_http(&receiver, sizes.l_http_requests, 32).await?;
    let l_http_many = baseline::l_http(&receiver, sizes.l_http_requests, 256).await?;
    let baselines = Baselines {
        disk_batch: baseline::l_disk(sizes.l_disk_records, sizes.s1_batch_size as usize)?,
        disk_single: baseline::l_disk(sizes.l_disk_records / 4, sizes.clients)?,
        http_one: l_http_one.rate(),
        http_many: l_http_many.rate(),
    };
    println!(
        "L-disk {:.0} rec/s ({}/flush), {:.0} rec/s ({}/flush); L-http {:.0} req/s (32 in flight), {:.0} req/s (256)",
        baselines.disk_batch, sizes.s1_batch_size, baselines.disk_single, sizes.clients, baselines.http_one, baselines.http_many
    );
    let ctx = Ctx {
        bins,
        receiver,
        sizes,
        baselines,
        work_dir: work.path().to_path_buf(),
        perf_dir: cli.perf.clone(),
        latency_dump: cli.latency_dump.clone(),
        server_env,
    };

    let mut rows: Vec<Row> = Vec::new();
    let mut s3_rate = 0.0;
    let ids = [
        "S1-batch",
        "S1-single",
        "S2",
        "S3",
        "S4",
        "S4a",
        "S5",
        "S6",
        "S7",
        "S8",
    ];
    for id in ids {
        if !wanted(&cli.only, id) {
            continue;
        }
        // Throughput moves ±25 % between runs on a shared machine: those scenarios run `repeats` times
        // and report the median, with every run's figure (issue 12).
        let repeats = if matches!(id, "S1-batch" | "S1-single" | "S2" | "S3" | "S7") {
            ctx.sizes.repeats.max(1)
        } else {
            1
        };
        let mut runs = Vec::new();
        for run in 0..repeats {
            let result = match id {
                "S1-batch" => one(scenarios::s1_batch(&ctx).await),
                "S1-single" => one(scenarios::s1_single(&ctx).await),
                "S2" => one(scenarios::s2(&ctx).await),
                "S3" => one(scenarios::s3(&ctx).await),
                "S4" => one(scenarios::s4(&ctx).await),
                "S4a" => one(scenarios::s4a(&ctx).await),
                "S5" => one(scenarios::s5(&ctx).await),
                "S6" => one(scenarios::s6(&ctx).await),
                "S7" => one(scenarios::s7(&ctx, s3_rate).await),
                // S8-events and S8-replay: two reads of the same log.
                _ => scenarios::s8(&ctx).await,
            };
            match result {
                Ok(rows) => {
                    if repeats > 1 {
                        for row in &rows {
                            println!("  run {}/{repeats}: {}", run + 1, row.line());
                        }
                    }
                    runs.push(rows);
                }
                Err(e) => {
                    eprintln!("{id} failed: {e:#}");
                    runs.push(vec![
                        Row::new(id, "failed to run", 0.0, "").extra("error", format!("{e:#}"))
                    ]);
                    break;
                }
            }
        }
        let new_rows = if repeats > 1 && runs.iter().all(|r| r.len() == 1 && r[0].error().is_none())
        {
            report::median_of(runs.into_iter().flatten().collect())
                .into_iter()
                .collect()
        } else {
            runs.pop().unwrap_or_default()
        };
        for row in new_rows {
            if id == "S3" {
                s3_rate = row.ours;
            }
            println!("{}", row.line());
            rows.push(row);
        }
        report::write_json(
            &cli.out,
            &machine,
            mode,
            [&load_start, &machine::load_average()],
            &rows,
        )?;
    }
    drop(receiver_proc);
    println!("\nresults: {}\n", display(&cli.out));
    println!(
        "Machine: {machine}; load average at start {load_start}, at end {}\n",
        machine::load_average()
    );
    print!("{}", report::markdown(&rows));
    Ok(())
}

/// One scenario's row as the list of rows the loop expects.
fn one(r: Result<Row>) -> Result<Vec<Row>> {
    r.map(|row| vec![row])
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
