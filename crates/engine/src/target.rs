//! The target policy applied to real addresses: when a webhook is saved ([`check_url`]) and again when a
//! connection is made ([`TargetResolver`], which filters what DNS returns before awc dials it, so the
//! address checked is the address used: DNS rebinding cannot slip a private address in).

use actix_tls::connect::Resolve;
use buildr_core::target::is_public;
use futures_util::future::LocalBoxFuture;
use std::net::{IpAddr, SocketAddr};

/// The connect-time policy refused every address a host resolved to. The dispatcher records its message
/// as the attempt's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused: {host} resolves only to non-public addresses ({addrs}); set delivery.allow_private_targets to allow")]
pub struct TargetRefused {
    pub host: String,
    pub addrs: String,
}

/// Resolves host names and keeps only public addresses (unless private targets are allowed).
pub struct TargetResolver {
    pub allow_private: bool,
}

impl Resolve for TargetResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn std::error::Error>>> {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            if self.allow_private {
                return Ok(addrs);
            }
            let public: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| is_public(a.ip()))
                .collect();
            if public.is_empty() {
                let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(TargetRefused {
                    host: host.to_owned(),
                    addrs: shown.join(", "),
                }) as Box<dyn std::error::Error>);
            }
            Ok(public)
        })
    }
}

/// A URL whose host is an IP literal is never resolved, so the connect-time policy checks it here.
pub fn check_literal(url: &str, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let Ok(parsed) = url::Url::parse(url) else {
        return Err("refused: not a valid URL".into());
    };
    let ip = match parsed.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    if is_public(ip) {
        Ok(())
    } else {
        Err(format!("refused: target address {ip} is not public; set delivery.allow_private_targets to allow"))
    }
}

/// The check when a webhook is saved: every address the host resolves to must be public. A host that
/// does not resolve is refused too (nothing could be delivered to it).
pub async fn check_url(url: &url::Url, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    check_literal(url.as_str(), false)?;
    let Some(url::Host::Domain(host)) = url.host() else {
        return Ok(());
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("host `{host}` does not resolve ({e})"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("host `{host}` does not resolve"));
    }
    if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "host `{host}` resolves to the non-public address {}; webhooks must target public addresses",
            bad.ip()
        ));
    }
    Ok(())
}
