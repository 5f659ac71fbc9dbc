//! Secret rotation checked by the svix verifier, and the connect-time target policy (DNS rebinding):
//! a webhook saved while private targets were allowed gets nothing once they are refused.
#![allow(clippy::unwrap_used)]

use buildr_e2e::verifier::svix_verify;
use buildr_e2e::{wait_until, Receiver, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn publish(s: &Server, id: i64) -> Value {
    let body = json!({"event": {"type": "company.create", "data": {"id": id, "url": format!("https://app.buildr.example/co/{id}")}}});
    let (st, v) = s.call("POST", "/events", Some(body));
    assert_eq!(st, 202, "{v}");
    v["event"].clone()
}

/// Waits for the delivery of CRM object `id` to `path` and returns it.
fn delivery(rx: &Receiver, path: &str, id: i64) -> buildr_e2e::Received {
    let find = || rx.at(path).into_iter().find(|r| r.json()["id"] == id);
    assert!(
        wait_until(Duration::from_secs(20), || find().is_some()),
        "object {id} was not delivered"
    );
    find().unwrap()
}

fn verifies(secret: &str, r: &buildr_e2e::Received) -> bool {
    svix_verify(secret, false, std::slice::from_ref(r))[0].is_ok()
}

#[test]
fn rotation_signs_with_old_and_new_during_the_overlap_then_only_the_new() {
    const OVERLAP: Duration = Duration::from_secs(6);
    let s = Server::builder()
        .env("BUILDR_DELIVERY__SECRET_ROTATION_OVERLAP", "6s")
        .start();
    let rx = Receiver::start();
    let s0 = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (st, v) = s.call(
        "POST",
        "/webhooks",
        Some(json!({"webhook": {"url": rx.url("/rot"), "secret": s0}})),
    );
    assert_eq!(st, 201, "{v}");
    let id = v["webhook"]["id"].as_str().unwrap().to_owned();

    // First rotation: generated. Both keys sign: `v1,<new> v1,<old>`.
    let (st, v) = s.call("POST", &format!("/webhooks/{id}/secret/rotate"), None);
    assert_eq!(st, 200, "{v}");
    let rotated_at = Instant::now();
    let s1 = v["secret"].as_str().unwrap().to_owned();
    assert!(s1.starts_with("whsec_") && s1 != s0);
    assert_eq!(
        s.call("GET", &format!("/webhooks/{id}/secret"), None).1["secret"],
        json!(s1)
    );
    publish(&s, 1);
    let r1 = delivery(&rx, "/rot", 1);
    assert!(
        rotated_at.elapsed() < OVERLAP,
        "the machine was too slow for this test's overlap"
    );
    assert_eq!(
        r1.header("webhook-signature").split(' ').count(),
        2,
        "{}",
        r1.header("webhook-signature")
    );
    assert!(verifies(&s1, &r1), "the new key verifies");
    assert!(
        verifies(s0, &r1),
        "the old key still verifies during the overlap"
    );

    // Second rotation inside the overlap, with a supplied secret: the newest and the one before only.
    let s2 = "whsec_c2Vjb25kLXJvdGF0aW9uLXNlY3JldC0wMTIzNDU2Nzg5";
    let (st, v) = s.call(
        "POST",
        &format!("/webhooks/{id}/secret/rotate"),
        Some(json!({"secret": s2})),
    );
    assert_eq!((st, v["secret"].as_str()), (200, Some(s2)), "{v}");
    let rotated_at = Instant::now();
    publish(&s, 2);
    let r2 = delivery(&rx, "/rot", 2);
    assert!(
        rotated_at.elapsed() < OVERLAP,
        "the machine was too slow for this test's overlap"
    );
    assert_eq!(r2.header("webhook-signature").split(' ').count(), 2);
    assert!(verifies(s2, &r2));
    assert!(verifies(&s1, &r2));
    assert!(
        !verifies(s0, &r2),
        "the key two rotations back no longer signs"
    );

    // After the overlap: only the newest.
    std::thread::sleep(OVERLAP.saturating_sub(rotated_at.elapsed()) + Duration::from_millis(1200));
    publish(&s, 3);
    let r3 = delivery(&rx, "/rot", 3);
    assert_eq!(
        r3.header("webhook-signature").split(' ').count(),
        1,
        "{}",
        r3.header("webhook-signature")
    );
    assert!(verifies(s2, &r3));
    assert!(
        !verifies(&s1, &r3),
        "the previous key stopped signing when the overlap ended"
    );

    // A bad supplied secret is refused and changes nothing.
    let (st, v) = s.call(
        "POST",
        &format!("/webhooks/{id}/secret/rotate"),
        Some(json!({"secret": "whsec_!!"})),
    );
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("secret")),
        "{v}"
    );
    assert_eq!(
        s.call("GET", &format!("/webhooks/{id}/secret"), None).1["secret"],
        json!(s2)
    );
}

#[test]
fn a_name_that_resolves_to_loopback_is_refused_at_connect_time() {
    let rx = Receiver::start();
    let port = rx.base.rsplit(':').next().unwrap().to_owned();
    // Saved while private targets were allowed (think: the name resolved to a public address then).
    let mut s = Server::start();
    let mut hooks = Vec::new();
    for (path, host) in [("/by-name", "localhost"), ("/by-ip", "127.0.0.1")] {
        let url = format!("http://{host}:{port}{path}");
        let (st, v) = s.call("POST", "/webhooks", Some(json!({"webhook": {"url": url}})));
        assert_eq!(st, 201, "{v}");
        hooks.push(v["webhook"]["id"].as_str().unwrap().to_owned());
    }
    publish(&s, 1);
    assert!(wait_until(Duration::from_secs(20), || rx.count("/by-name")
        == 1
        && rx.count("/by-ip") == 1));

    // Now private targets are refused: the dispatcher's resolver filters the addresses it would dial.
    s.restart_with_env("BUILDR_DELIVERY__ALLOW_PRIVATE_TARGETS", "false");
    let e = publish(&s, 2);
    // The test schedule (100ms, 200ms, 300ms) is used up well within this.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rx.count("/by-name"), 1, "nothing more reached the receiver");
    assert_eq!(rx.count("/by-ip"), 1);
    for id in &hooks {
        let path = format!(
            "/webhooks/{id}/deliveries/{}/attempts",
            e["id"].as_str().unwrap()
        );
        if s.call("GET", &path, None).1["error"]["message"] == "route not found" {
            continue; // the delivery history routes are not in this build
        }
        // The delivery index is written off the request path: wait for the attempts to show.
        let mut v = Value::Null;
        let shown = wait_until(Duration::from_secs(20), || {
            v = s.call("GET", &path, None).1;
            v["attempts"].as_array().is_some_and(|a| !a.is_empty())
        });
        assert!(shown, "{v}");
        for a in v["attempts"].as_array().unwrap() {
            assert_eq!(a["response_status"], Value::Null);
            let error = a["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("refused") && error.contains("allow_private_targets"),
                "{v}"
            );
        }
    }
    assert_eq!(rx.count("/by-name"), 1, "nothing more reached the receiver");
    assert_eq!(rx.count("/by-ip"), 1);
    // Saving such a target is refused outright now.
    let (st, _) = s.call(
        "POST",
        "/webhooks",
        Some(json!({"webhook": {"url": format!("http://localhost:{port}/new")}})),
    );
    assert_eq!(st, 422);
}
