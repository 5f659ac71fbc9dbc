//! Who is calling: the auth extractor. Every `/api` route but the OpenAPI document takes a [`Caller`];
//! a missing, malformed or unknown token is the same `401` whatever was wrong.

use crate::error::ApiError;
use crate::AppState;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use buildr_core::AccountId;
use futures_util::future::{ready, Ready};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The authenticated caller and the account it acts on. Handlers scope every lookup by `account`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: AccountId,
    pub admin: bool,
}

/// The admin token, kept only as its SHA-256.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    fn matches(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(h.ct_eq(&self.0))
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

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal("application state missing"))?;
    let token = bearer(req).ok_or_else(ApiError::unauthorized)?;
    if !state.admin_token.matches(token) {
        return Err(ApiError::unauthorized());
    }
    let account = match req.headers().get("buildr-account") {
        None => AccountId::default_account(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<AccountId>().ok())
            .ok_or_else(|| ApiError::invalid("Buildr-Account", "must be an account id (acc_…)"))?,
    };
    Ok(Caller {
        account,
        admin: true,
    })
}
