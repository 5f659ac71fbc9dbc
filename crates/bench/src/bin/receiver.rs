//! `buildr-bench-receiver`: a fast counting webhook receiver, its own process so it never shares the
//! server's (or the driver's) runtime. Paths:
//!
//! - `POST /hook/{n}`: count, answer `200` at once.
//! - `POST /lat/{n}`: count, and keep `(data id, arrival unix nanos)` for the driver's latency figures.
//! - `POST /slow/{n}`: count separately, answer only after `--slow-ms` (longer than the server's timeout).
//! - `GET /stats` → `{"hook": n, "slow": n}`; `GET /latencies` → `[[id, nanos], …]` (and forgets them);
//!   `POST /reset` zeroes everything.
//!
//! It prints `receiver listening on http://ADDR` once bound (`--bind 127.0.0.1:0` picks a free port).
#![forbid(unsafe_code)]

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::{Context, Result};
use buildr_bench::clock::unix_nanos;
use clap::Parser;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "buildr-bench-receiver",
    about = "Counting webhook receiver for make bench"
)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// How long `/slow/*` takes to answer.
    #[arg(long, default_value_t = 5000)]
    slow_ms: u64,
}

#[derive(Default)]
struct Counters {
    hook: AtomicU64,
    slow: AtomicU64,
    latencies: Mutex<Vec<(i64, i64)>>,
}

struct State {
    counters: Counters,
    slow: Duration,
}

async fn hook(state: web::Data<State>, _body: web::Bytes) -> HttpResponse {
    state.counters.hook.fetch_add(1, Relaxed);
    HttpResponse::Ok().finish()
}

async fn lat(state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let arrived = unix_nanos();
    if let Some(id) = data_id(&body) {
        state.counters.latencies.lock().push((id, arrived));
    }
    state.counters.hook.fetch_add(1, Relaxed);
    HttpResponse::Ok().finish()
}

async fn slow(state: web::Data<State>, _body: web::Bytes) -> HttpResponse {
    state.counters.slow.fetch_add(1, Relaxed);
    actix_rt::time::sleep(state.slow).await;
    HttpResponse::Ok().finish()
}

async fn stats(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "hook": state.counters.hook.load(Relaxed),
        "slow": state.counters.slow.load(Relaxed),
    }))
}

async fn latencies(state: web::Data<State>) -> HttpResponse {
    let taken = std::mem::take(&mut *state.counters.latencies.lock());
    HttpResponse::Ok().json(taken)
}

async fn reset(state: web::Data<State>) -> HttpResponse {
    state.counters.hook.store(0, Relaxed);
    state.counters.slow.store(0, Relaxed);
    state.counters.latencies.lock().clear();
    HttpResponse::NoContent().finish()
}

/// The integer after `"id":` in a delivery body (`{"type":…,"timestamp":…,"id":123,"url":…}`).
fn data_id(body: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(body).ok()?;
    let rest = &text[text.find("\"id\":")? + 5..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let state = web::Data::new(State {
        counters: Counters::default(),
        slow: Duration::from_millis(cli.slow_ms),
    });
    actix_rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .route("/hook/{n}", web::post().to(hook))
                .route("/lat/{n}", web::post().to(lat))
                .route("/slow/{n}", web::post().to(slow))
                .route("/stats", web::get().to(stats))
                .route("/latencies", web::get().to(latencies))
                .route("/reset", web::post().to(reset))
        })
        .workers(cli.workers.max(1))
        .backlog(4096)
        .max_connection_rate(4096)
        .disable_signals()
        .bind(cli.bind)
        .with_context(|| format!("cannot listen on {}", cli.bind))?;
        let addr = server
            .addrs()
            .first()
            .copied()
            .context("bound to no address")?;
        let running = server.run();
        println!("receiver listening on http://{addr}");
        running.await.context("receiver stopped with an error")
    })
}

#[cfg(test)]
mod tests {
    use super::data_id;

    #[test]
    fn finds_the_data_id_in_a_delivery_body() {
        let body = br#"{"type":"contact.create","timestamp":"2026-11-29T13:46:14.123Z","id":42,"url":"https://x/1"}"#;
        assert_eq!(data_id(body), Some(42));
        assert_eq!(data_id(br#"{"id":"str"}"#), None);
    }
}
