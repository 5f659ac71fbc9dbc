//! Who is calling: the auth extractors. Every `/api` route but the OpenAPI document takes a [`Caller`]
//! (admin-only routes take an [`Admin`]). A missing, malformed, unknown or revoked token is the same `401`
//! whatever was wrong; failed attempts are rate-limited per client address (`429`), successful ones never.

use crate::error::ApiError;
use crate::AppState;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use buildr_core::AccountId;
use futures_util::future::{ready, Ready};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use subtle::ConstantTimeEq;

/// Failed authentications allowed per client address by default (`auth.failed_per_minute`): a burst of
/// this many, refilled at this rate per minute. Past it, failures answer `429` until the address has waited.
pub const FAILED_AUTH_PER_MINUTE: u32 = 10;
/// When the failure limiter tracks more addresses than this, it forgets the ones that have recovered.
const TRACKED_ADDRESSES: usize = 10_000;

/// The authenticated caller and the account it acts on. Handlers scope every lookup by `account`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: AccountId,
    pub admin: bool,
}

/// A caller with the admin token; an account key gets `403 forbidden`.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

/// The admin token, kept only as its SHA-256.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &str) -> Self {
        Self(Self::sha256(token))
    }

    /// The token known only by its hash (cluster mode: the hash another node stored).
    pub fn from_sha256(hash: [u8; 32]) -> Self {
        Self(hash)
    }

    /// The SHA-256 a token is kept as.
    pub fn sha256(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    fn matches(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(h.ct_eq(&self.0))
    }
}

/// Counts failed authentications per client address (governor, keyed).
pub struct AuthFailures {
    /// `None`: not limited (`auth.failed_per_minute = 0`).
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl AuthFailures {
    /// `n` failures per address per minute, in a burst of `n`; `0` turns the limit off.
    pub fn per_minute(n: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(n)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n).allow_burst(n))),
        }
    }

    /// Records one failure from `ip`: the error to answer with (`401`, or `429` once over the limit).
    fn fail(&self, ip: IpAddr) -> ApiError {
        let Some(limiter) = &self.limiter else {
            return ApiError::unauthorized();
        };
        if limiter.len() > TRACKED_ADDRESSES {
            limiter.retain_recent();
        }
        match limiter.check_key(&ip) {
            Ok(()) => ApiError::unauthorized(),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                tracing::debug!(%ip, "repeated failed authentication; rate limited");
                ApiError::rate_limited().retry_after(wait.as_secs().max(1))
            }
        }
    }
}

impl Default for AuthFailures {
    fn default() -> Self {
        Self::per_minute(FAILED_AUTH_PER_MINUTE)
    }
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|c| {
            if c.admin {
                Ok(Admin(c))
            } else {
                Err(ApiError::forbidden("this route needs the admin token"))
            }
        }))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal("application state missing"))?;
    let ip = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let Some(token) = bearer(req) else {
        return Err(state.auth_failures.fail(ip));
    };
    if state.admin_token.matches(token) {
        let account = match named_account(req)? {
            None => AccountId::default_account(),
            Some(id) => state.engine.account(&id)?.id,
        };
        return Ok(Caller {
            account,
            admin: true,
        });
    }
    let Some(account) = state.engine.authenticate_key(token)? else {
        return Err(state.auth_failures.fail(ip));
    };
    if named_account(req)?.is_some_and(|n| n != account) {
        return Err(ApiError::forbidden(
            "an account key acts only on its own account",
        ));
    }
    Ok(Caller {
        account,
        admin: false,
    })
}

/// The account named by `Buildr-Account`, if the header is there.
fn named_account(req: &HttpRequest) -> Result<Option<AccountId>, ApiError> {
    req.headers()
        .get("buildr-account")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<AccountId>().ok())
                .ok_or_else(|| ApiError::invalid("Buildr-Account", "must be an account id (acc_…)"))
        })
        .transpose()
}
