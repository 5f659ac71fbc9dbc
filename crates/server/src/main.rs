//! `buildr-webhooks`: the service binary.
#![forbid(unsafe_code)]

mod cluster;
mod config;
#[cfg(test)]
mod docs_check;
mod replay;
mod verify;

use actix_web::{web, App, HttpServer};
use anyhow::{Context, Result};
use buildr_api::AppState;
use buildr_engine::Engine;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// mimalloc: the service allocates and frees many small buffers per request and delivery (glibc malloc
/// was about a quarter of the engine thread's profile in the benchmarks).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "buildr-webhooks",
    version,
    about = "Signed, rate-limited, never-lost webhook delivery"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// The TOML config file (every key can also be set as BUILDR_<SECTION>__<KEY>).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Queue events again for a webhook, offline (server stopped); the next `serve` delivers them.
    Replay {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The webhook (wh_…).
        #[arg(long)]
        webhook: String,
        /// Events created at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// …and before this one.
        #[arg(long)]
        until: Option<String>,
        /// Or by seq: from this seq (inclusive)…
        #[arg(long)]
        from_seq: Option<u64>,
        /// …to this one (exclusive).
        #[arg(long)]
        to_seq: Option<u64>,
        /// Only the events whose delivery to the webhook failed.
        #[arg(long)]
        only_failed: bool,
    },
    /// Inspect the event log.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Check that every record decodes and that the projection rebuilds from the log (server stopped).
    Verify {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Replay {
            config,
            webhook,
            since,
            until,
            from_seq,
            to_seq,
            only_failed,
        } => replay::run(replay::Args {
            config: config.as_deref(),
            webhook: &webhook,
            since: since.as_deref(),
            until: until.as_deref(),
            from_seq,
            to_seq,
            only_failed,
        }),
        Command::Log {
            command: LogCommand::Verify { config },
        } => verify::run(config.as_deref()),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn init_tracing(log: &config::LogSection) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.format == config::LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(config_path: Option<PathBuf>) -> Result<()> {
    let cfg = config::load(config_path.as_deref())?;
    init_tracing(&cfg.log);
    let cluster = cluster::open(&cfg)?;
    // The cluster's token (known by its hash) when none is configured in cluster mode; else as on one node.
    let cluster_admin = cluster.as_ref().and_then(|c| c.admin.clone());
    let (token, token_file) = match &cluster_admin {
        Some(_) => (String::new(), None),
        None => config::admin_token(&cfg)?,
    };
    let stream = cfg.cluster.stream.clone();
    let engine_config = cfg.engine();
    let bind = cfg.server.bind;
    let server_cfg = cfg.server.clone();
    let failed_auth_per_minute = cfg.auth.failed_per_minute;

    actix_rt::System::new().block_on(async move {
        let (engine, leases) = match cluster {
            Some(c) => (
                Engine::start_on(engine_config, c.log, c.open, c.owner),
                Some(c.leases),
            ),
            None => (Engine::start(engine_config), None),
        };
        let engine = engine.context("cannot open the event log")?;
        let mut state =
            AppState::new(engine.clone(), &token).with_failed_auth_limit(failed_auth_per_minute);
        if let Some((admin, _)) = &cluster_admin {
            state = state.with_admin_token(buildr_api::auth::AdminToken::from_sha256(admin.sha256));
        }
        let state = web::Data::new(state);
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(buildr_api::request_log::request_log))
                .app_data(state.clone())
                .configure(buildr_api::configure)
                .default_service(web::to(buildr_api::not_found))
        })
        .shutdown_timeout(5)
        // SIGTERM/SIGINT are handled below (`stop_on_signal`): a cluster node hands its shards over before
        // the server stops, and actix-server's own handling would stop the delivery threads at once.
        .disable_signals()
        .keep_alive(match server_cfg.keep_alive.0 {
            d if d.is_zero() => actix_web::http::KeepAlive::Disabled,
            d => actix_web::http::KeepAlive::Timeout(d),
        })
        .client_request_timeout(server_cfg.client_request_timeout.0)
        .bind(bind)
        .with_context(|| format!("cannot listen on {bind}"))?;
        let addr = server.addrs().first().copied().unwrap_or(bind);
        let server = server.run();

        println!("buildr-webhooks listening on http://{addr}");
        match (&cluster_admin, &token_file) {
            (Some((_, Some(generated))), _) => println!(
                "admin token generated for the cluster (every node accepts it; only its SHA-256 is stored, in the \
                 KV bucket {stream}-admin, and only this node prints it): {generated}"
            ),
            (Some((_, None)), _) => println!(
                "admin token: the cluster's (printed by the node that generated it; its SHA-256 is in the KV bucket {stream}-admin)"
            ),
            (None, Some((path, true))) => {
                println!("admin token generated and stored in {} (mode 0600): {token}", path.display())
            }
            (None, Some((path, false))) => println!("admin token: stored in {}", path.display()),
            (None, None) => println!("admin token: from configuration"),
        }
        let token_expr = match &token_file {
            Some((path, _)) => format!("$(cat {})", path.display()),
            None => "$BUILDR_ADMIN_TOKEN".to_owned(),
        };
        println!(
            "create a webhook:\n  curl -s -X POST http://{addr}/api/2023-01/webhooks -H \"Authorization: Bearer {token_expr}\" -H 'Content-Type: application/json' \\\n    -d '{{\"webhook\": {{\"url\": \"https://example.com/hooks\", \"filter_types\": [\"opportunity.create\"], \"rate_limit\": 100}}}}'"
        );

        // A start-up replay that fails (a corrupt log) stops the server with an error.
        let handle = server.handle();
        let failure = std::sync::Arc::new(parking_lot_free::Slot::default());
        let slot = failure.clone();
        let watched = engine.clone();
        actix_rt::spawn(async move {
            let ready = watched.ready().await;
            if ready.is_ok() {
                let r = watched.startup_report();
                let from = r.checkpoint_seq.map_or_else(|| "no checkpoint".to_owned(), |s| format!("checkpoint at seq {s}"));
                println!("ready: replayed {} log records ({from}) in {} ms", r.replayed_records, r.millis);
                if !r.open.truncated.is_empty() {
                    println!("recovered: cut torn records at the end of the log: {:?}", r.open.truncated);
                }
            }
            if let Err(e) = ready {
                slot.set(e.to_string());
                handle.stop(false).await;
            }
        });
        actix_rt::spawn(stop_on_signal(server.handle(), engine.clone(), leases.clone()));
        server.await.context("server error")?;
        // The delivery threads stop here (attempts still in flight are abandoned: sent again after the
        // next start, or by the next owner), before the checkpoint.
        actix_rt::System::current().stop();
        if let Some(e) = failure.take() {
            anyhow::bail!("start-up failed: {e}");
        }
        // A clean stop saves a checkpoint so the next start replays nothing.
        if engine.is_ready() {
            match engine.shutdown().await {
                Ok(()) => tracing::info!("stopped cleanly; projection checkpoint saved"),
                Err(e) => tracing::warn!(error = %e, "clean stop incomplete; the next start replays the log tail"),
            }
        }
        // In cluster mode the other nodes take this node's shards at once, not after lease_ttl.
        if let Some(leases) = leases {
            leases.release_all(std::time::Duration::from_secs(3)).await;
            tracing::info!("shard leases released");
        }
        Ok(())
    })
}

/// Waits for SIGTERM or SIGINT, then stops the server cleanly. A cluster node first hands its shards over:
/// it sends nothing more, waits (at most `delivery.timeout` + 2 s) for the attempts in flight to end and
/// their outcomes to be recorded, so the next owner does not send them again; its leases are given back
/// after the checkpoint (in `serve`). The HTTP server keeps answering meanwhile.
async fn stop_on_signal(
    server: actix_web::dev::ServerHandle,
    engine: Engine,
    leases: Option<buildr_cluster::Leases>,
) {
    use actix_rt::signal::unix::{signal, SignalKind};
    let (term, int) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let (Ok(mut term), Ok(mut int)) = (term, int) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stop the server with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; stopping"),
        _ = int.recv() => tracing::info!("SIGINT received; stopping"),
    }
    if let (Some(leases), true) = (&leases, engine.is_ready()) {
        leases.quiesce();
        let bound = engine.config().delivery.timeout + std::time::Duration::from_secs(2);
        if cluster::wait_for_attempts_in_flight(&engine, bound).await {
            tracing::info!("attempts in flight finished and recorded; handing the shards over");
        } else {
            tracing::warn!(
                ?bound,
                "attempts still in flight at the stop; the next owner sends them again"
            );
        }
    }
    server.stop(true).await;
}

/// A tiny write-once slot (std only).
mod parking_lot_free {
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Slot(Mutex<Option<String>>);

    impl Slot {
        pub fn set(&self, v: String) {
            if let Ok(mut g) = self.0.lock() {
                *g = Some(v);
            }
        }
        pub fn take(&self) -> Option<String> {
            self.0.lock().ok().and_then(|mut g| g.take())
        }
    }
}
