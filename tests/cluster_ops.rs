//! Cluster mode's operations end to end: readiness tied to the stream, attempts recorded once across a
//! NATS outage, one admin token for the cluster, retention, the offline replay. Real processes: three
//! nats-server (from `make nats-server`) and `buildr-webhooks` nodes, each with its own storage.path.
#![allow(clippy::unwrap_used)]

use buildr_cluster::testkit::NatsCluster;
use buildr_e2e::{wait_until, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// One cluster at a time (see tests/cluster.rs).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A node of stream `ops` (lease_ttl 2 s), with `extra` set in its environment.
fn node_with(nats: &NatsCluster, id: &str, extra: &[(&str, &str)], token: bool) -> Server {
    let mut b = Server::builder()
        .env("BUILDR_CLUSTER__NATS", &nats.urls().join(","))
        .env("BUILDR_CLUSTER__NODE_ID", id)
        .env("BUILDR_CLUSTER__STREAM", "ops")
        .env("BUILDR_CLUSTER__LEASE_TTL", "2s");
    if !token {
        b = b.without_admin_token();
    }
    for (k, v) in extra {
        b = b.env(k, v);
    }
    b.start()
}

fn node(nats: &NatsCluster, id: &str) -> Server {
    node_with(nats, id, &[], true)
}

/// `GET /readyz`: the status and the body.
fn readyz(s: &Server) -> (u16, Value) {
    let (st, body) = s.raw("GET", "/readyz", None, &[]);
    (st, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn readyz_follows_the_connection_to_nats_without_any_write() {
    let _one = exclusive();
    let mut nats = NatsCluster::start(3);
    let s = node(&nats, "node-a");
    let event = s.publish("contact.create", json!(1));
    assert_eq!(readyz(&s).0, 200);
    for i in 0..3 {
        nats.kill(i);
    }
    // No write: the node notices by itself.
    let cut = Instant::now();
    let mut last = (0, Value::Null);
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = readyz(&s);
            last.0 == 503
        }),
        "/readyz stayed {} with NATS down: {}",
        last.0,
        last.1
    );
    eprintln!(
        "/readyz 503 {:?} after NATS went down: {}",
        cut.elapsed(),
        last.1
    );
    assert_eq!(last.1["status"], "out_of_sync", "{}", last.1);
    // Reads are still served from this node's copy.
    assert_eq!(
        s.event_ids(),
        vec![event["id"].as_str().unwrap().to_owned()]
    );
    nats.restart_all();
    let back = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || readyz(&s).0 == 200),
        "/readyz did not come back: {}",
        readyz(&s).1
    );
    eprintln!("/readyz 200 {:?} after NATS came back", back.elapsed());
    // And writes work again (after the writer's own healing, if it had tried meanwhile).
    assert!(wait_until(Duration::from_secs(30), || {
        s
        .call(
            "POST",
            "/events",
            Some(json!({"event": {"type": "contact.create", "data": {"id": 2, "url": "https://x.example/2"}}}))
        )
        .0
        == 202
    }));
}

/// Each event's attempts as the node's delivery records count them, when all `n` are delivered.
fn recorded_attempts(
    s: &Server,
    hook: &str,
    n: usize,
) -> Option<std::collections::BTreeMap<String, u64>> {
    let (st, v) = s.call(
        "GET",
        &format!("/webhooks/{hook}/deliveries?limit=250"),
        None,
    );
    let d = v["deliveries"].as_array().filter(|_| st == 200)?;
    if d.len() != n || d.iter().any(|d| d["status"] != "succeeded") {
        return None;
    }
    Some(
        d.iter()
            .map(|d| {
                (
                    d["event_id"].as_str().unwrap().to_owned(),
                    d["attempts"].as_u64().unwrap(),
                )
            })
            .collect(),
    )
}

#[test]
fn attempts_recorded_across_nats_outages_are_counted_once() {
    let _one = exclusive();
    let mut nats = NatsCluster::start(3);
    // Leases that outlast the outages: the node keeps its shards, so nothing is sent twice and every
    // request the receiver got must be recorded exactly once.
    let s = node_with(
        &nats,
        "node-a",
        &[("BUILDR_CLUSTER__LEASE_TTL", "60s")],
        true,
    );
    assert!(wait_until(Duration::from_secs(20), || s
        .call("GET", "/cluster", None)
        .1["cluster"]["nodes"][0]["shards"]
        == 64));
    let rx = buildr_e2e::Receiver::start();
    rx.delay_randomly("/o", Duration::from_millis(20));
    // 20 a second: the 250 events take over 12 s to deliver, and outcomes are recorded all along.
    let hook = s.create_webhook(&rx.url("/o"), json!({"rate_limit": 1200}));
    let events: Vec<Value> = (0..250)
        .map(|i| json!({"type": "contact.create", "data": {"id": i, "url": "https://x.example/o"}}))
        .collect();
    let (st, v) = s.call("POST", "/events/batch", Some(json!({ "events": events })));
    assert_eq!(st, 202, "{v}");
    // Kill the stream's leader while outcomes are being recorded: an outcome batch in flight then may
    // be stored by the new leader without its acknowledgement reaching the node (its fate unknown there).
    // Then all of NATS at once.
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        let mut leader = None;
        assert!(wait_until(Duration::from_secs(15), || {
            leader = nats.stream_leader("ops");
            leader.is_some()
        }));
        let leader = leader.unwrap();
        if round < 2 {
            nats.kill(leader);
            std::thread::sleep(Duration::from_millis(1500));
            nats.restart(leader);
        } else {
            nats.restart_all();
        }
    }
    let mut recorded = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            recorded = recorded_attempts(&s, &hook, 250);
            recorded.is_some()
        }),
        "not every event delivered and recorded: {} requests received",
        rx.count("/o")
    );
    let mut received: std::collections::BTreeMap<String, u64> = Default::default();
    for r in rx.at("/o") {
        *received
            .entry(r.header("webhook-id").to_owned())
            .or_default() += 1;
    }
    let recorded = recorded.unwrap();
    let differ: Vec<_> = recorded
        .iter()
        .filter(|(id, n)| received.get(*id) != Some(n))
        .map(|(id, n)| (id, n, received.get(id)))
        .collect();
    eprintln!(
        "{} requests received for 250 events; {} events recorded with another attempt count",
        rx.count("/o"),
        differ.len()
    );
    assert!(
        differ.is_empty(),
        "recorded attempts ≠ requests received: {differ:?}"
    );
}

#[test]
fn nodes_started_at_once_without_a_token_share_one_generated_by_one_of_them() {
    let _one = exclusive();
    let nats = NatsCluster::start(3);
    let start = |id: &str| node_with(&nats, id, &[], false);
    let mut nodes: Vec<Server> = std::thread::scope(|scope| {
        let a = scope.spawn(|| start("node-a"));
        let b = scope.spawn(|| start("node-b"));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    let printed = |s: &Server| -> Vec<String> {
        s.stdout_lines
            .lock()
            .iter()
            .filter_map(|l| l.split("only this node prints it): ").nth(1))
            .map(|t| t.trim().to_owned())
            .collect()
    };
    let tokens: Vec<String> = nodes.iter().flat_map(printed).collect();
    assert_eq!(
        tokens.len(),
        1,
        "exactly one node generates the token: {tokens:?}"
    );
    let token = &tokens[0];
    assert!(token.starts_with("adm_"), "{token}");
    let admin_call = |s: &Server, token: &str| {
        s.raw(
            "GET",
            "/api/2023-01/cluster",
            None,
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .0
    };
    for s in &nodes {
        assert!(
            !s.data_dir.join("admin.token").exists(),
            "no token file in a node's derived state"
        );
        assert_eq!(admin_call(s, token), 200);
        assert_eq!(admin_call(s, "adm_wrong"), 401);
    }
    // A node that joins (or restarts) later accepts it too, and prints none.
    nodes.push(start("node-c"));
    assert!(printed(&nodes[2]).is_empty());
    assert_eq!(admin_call(&nodes[2], token), 200);
    nodes[0].restart();
    assert_eq!(admin_call(&nodes[0], token), 200);
}

#[test]
fn the_offline_replay_command_appends_its_replay_to_the_clusters_stream() {
    let _one = exclusive();
    let nats = NatsCluster::start(3);
    let nodes = [node(&nats, "node-a"), node(&nats, "node-b")];
    let rx = buildr_e2e::Receiver::start();
    let hook = nodes[0].create_webhook(&rx.url("/r"), json!({"rate_limit": 600}));
    let ids: std::collections::BTreeSet<String> = (0..5)
        .map(|i| {
            nodes[i % 2].publish("contact.create", json!(i))["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || rx.count("/r") >= 5));
    // Run with the cluster config (the nodes keep running): no local data dir is involved.
    let urls = nats.urls().join(",");
    let cfg = buildr_e2e::repo_root().join("config/test.toml");
    let (code, out) = buildr_e2e::server::run_binary(
        &[
            "replay",
            "--config",
            cfg.to_str().unwrap(),
            "--webhook",
            &hook,
            "--from-seq",
            "1",
        ],
        &[
            ("BUILDR_CLUSTER__NATS", urls.as_str()),
            ("BUILDR_CLUSTER__STREAM", "ops"),
            ("BUILDR_ADMIN_TOKEN", "t"),
            ("BUILDR_STORAGE__PATH", "/nonexistent/buildr-replay-test"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5 events queued again"), "{out}");
    // The owner delivers each event a second time, and every node lists the replay's record.
    assert!(
        wait_until(Duration::from_secs(20), || rx.count("/r") >= 10),
        "replayed: {} of 10 requests",
        rx.count("/r")
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut per_event: std::collections::BTreeMap<String, usize> = Default::default();
    for r in rx.at("/r") {
        *per_event
            .entry(r.header("webhook-id").to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        per_event
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        ids
    );
    assert!(per_event.values().all(|&n| n == 2), "{per_event:?}");
    for n in &nodes {
        assert!(wait_until(Duration::from_secs(5), || {
            let (_, v) = n.call(
                "GET",
                &format!("/webhooks/{hook}/deliveries?limit=100"),
                None,
            );
            v["deliveries"].as_array().is_some_and(|d| {
                d.len() == 5
                    && d.iter()
                        .all(|d| d["attempts"] == 2 && d["status"] == "succeeded")
            })
        }));
    }
}

#[test]
fn retention_deletes_from_the_stream_once_and_every_node_drops_the_same_records() {
    let _one = exclusive();
    let nats = NatsCluster::start(3);
    let start = |id: &str| {
        node_with(
            &nats,
            id,
            &[
                ("BUILDR_RETENTION__EVENTS", "2s"),
                ("BUILDR_RETENTION__INTERVAL", "300ms"),
            ],
            true,
        )
    };
    let mut nodes = [start("node-a"), start("node-b"), start("node-c")];
    let rx = buildr_e2e::Receiver::start();
    let hook = nodes[0].create_webhook(&rx.url("/t"), json!({"rate_limit": 6000}));
    for i in 0..6 {
        nodes[i % 3].publish("contact.create", json!(i));
    }
    assert!(wait_until(Duration::from_secs(20), || rx.count("/t") >= 6));
    let before = nats.stream_messages("ops").unwrap();
    // Past the retention period: the finished events go from the stream and from every node.
    assert!(
        wait_until(Duration::from_secs(20), || nodes
            .iter()
            .all(|n| n.event_ids().is_empty())),
        "events still listed: {:?}",
        nodes.iter().map(Server::event_ids).collect::<Vec<_>>()
    );
    let after = nats.stream_messages("ops").unwrap();
    eprintln!("stream messages: {before} before retention, {after} after");
    assert!(
        after < before,
        "the stream kept its messages: {before} → {after}"
    );
    // Each node agrees: no delivery records left for the removed events, the webhook still there.
    for n in &nodes {
        assert_eq!(n.call("GET", &format!("/webhooks/{hook}"), None).0, 200);
        assert!(wait_until(Duration::from_secs(5), || {
            let (_, v) = n.call("GET", &format!("/webhooks/{hook}/deliveries"), None);
            v["deliveries"].as_array().is_some_and(Vec::is_empty)
        }));
    }
    // A node rebuilt from the stream alone has the same records as the others kept: the events' messages
    // are gone from the stream itself (a node drops from its copy only what the stream no longer holds).
    nodes[1].kill9();
    std::fs::remove_dir_all(&nodes[1].data_dir).unwrap();
    nodes[1].start_again();
    assert!(nodes[1].event_ids().is_empty());
    assert_eq!(
        nodes[1].call("GET", &format!("/webhooks/{hook}"), None).0,
        200
    );
    // And the stream still verifies.
    let urls = nats.urls().join(",");
    let cfg = buildr_e2e::repo_root().join("config/test.toml");
    let (code, out) = buildr_e2e::server::run_binary(
        &["log", "verify", "--config", cfg.to_str().unwrap()],
        &[
            ("BUILDR_CLUSTER__NATS", urls.as_str()),
            ("BUILDR_CLUSTER__STREAM", "ops"),
            ("BUILDR_ADMIN_TOKEN", "t"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: ") && out.contains("1 webhooks"), "{out}");
}
