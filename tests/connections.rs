//! HTTP connections: an idle keep-alive connection stays usable for `server.keep_alive` (75 s by
//! default, longer than the 60 s common proxies keep theirs), and is closed after it.
#![allow(clippy::unwrap_used)]

use buildr_e2e::Server;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Sends `GET /healthz` on `conn` and reads one response; `None` when the connection was closed.
fn healthz(conn: &mut TcpStream) -> Option<String> {
    let req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n";
    conn.write_all(req).ok()?;
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    loop {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= head_end + 4 + length {
                return Some(text);
            }
        }
    }
}

fn connect(s: &Server) -> TcpStream {
    let addr = s.base.trim_start_matches("http://");
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn
}

#[test]
fn an_idle_connection_is_still_usable_after_10_seconds() {
    let s = Server::start();
    let mut conn = connect(&s);
    assert!(healthz(&mut conn).unwrap().starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_secs(10));
    let again = healthz(&mut conn).expect("the server kept the idle connection");
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}

#[test]
fn keep_alive_is_configurable_and_zero_turns_it_off() {
    let short = Server::builder()
        .env("BUILDR_SERVER__KEEP_ALIVE", "1s")
        .start();
    let mut conn = connect(&short);
    assert!(healthz(&mut conn).unwrap().starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(healthz(&mut conn), None, "closed after 1 s idle");

    let off = Server::builder()
        .env("BUILDR_SERVER__KEEP_ALIVE", "0s")
        .start();
    let mut conn = connect(&off);
    let first = healthz(&mut conn).unwrap();
    assert!(
        first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );
}
