//! `buildr-webhooks`: the service binary.
#![forbid(unsafe_code)]

mod config;
mod verify;

use actix_web::{web, App, HttpServer};
use anyhow::{Context, Result};
use buildr_api::AppState;
use buildr_engine::Engine;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    let (token, token_file) = config::admin_token(&cfg)?;
    let engine_config = cfg.engine();
    let bind = cfg.server.bind;

    actix_rt::System::new().block_on(async move {
        let engine = Engine::start(engine_config).context("cannot open the event log")?;
        let state = web::Data::new(AppState::new(engine.clone(), &token));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(buildr_api::configure)
                .default_service(web::to(buildr_api::not_found))
        })
        .shutdown_timeout(5)
        .bind(bind)
        .with_context(|| format!("cannot listen on {bind}"))?;
        let addr = server.addrs().first().copied().unwrap_or(bind);
        let server = server.run();

        println!("buildr-webhooks listening on http://{addr}");
        match &token_file {
            Some((path, true)) => {
                println!("admin token generated and stored in {} (mode 0600): {token}", path.display())
            }
            Some((path, false)) => println!("admin token: stored in {}", path.display()),
            None => println!("admin token: from configuration"),
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
        actix_rt::spawn(async move {
            if let Err(e) = engine.ready().await {
                slot.set(e.to_string());
                handle.stop(false).await;
            }
        });
        server.await.context("server error")?;
        if let Some(e) = failure.take() {
            anyhow::bail!("start-up failed: {e}");
        }
        Ok(())
    })
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
