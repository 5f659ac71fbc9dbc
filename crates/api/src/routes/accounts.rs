//! `/accounts` (admin token only): create accounts, list them, add and revoke their API keys. A key is
//! in the answer that made it and nowhere else.

use crate::auth::Admin;
#[allow(unused_imports)]
use crate::error::{ApiError, ErrorBody};
use crate::json::{OptionalJson, StrictJson};
use crate::views::{AccountCreated, AccountList, AccountView, KeyCreated};
use crate::AppState;
use actix_web::{web, HttpResponse};
use buildr_core::{api_key, AccountId};
use serde::Deserialize;

/// Named apart from `webhooks::CreateBody` in the OpenAPI document: two schemas of one name overwrite
/// each other there (utoipa keys components by name), and POST /webhooks was documented with this body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateAccountBody)]
pub struct CreateBody {
    account: AccountInput,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AccountInput {
    /// 1-256 characters.
    name: String,
}

/// `POST /accounts/{id}/keys` takes no fields; an empty body or `{}` both do.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {}

fn account_id(raw: &str) -> Result<AccountId, ApiError> {
    // An id that cannot exist is simply not found.
    raw.parse().map_err(|_| ApiError::not_found("account"))
}

#[utoipa::path(post, path = "/api/2023-01/accounts", tag = "accounts", request_body = CreateBody, responses((status = 201, description = "The account and its first API key (shown only here)", body = AccountCreated), (status = 400, description = "Invalid request (the field is named)", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Body is not JSON", body = ErrorBody), (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody), (status = 403, description = "An account key: this route needs the admin token", body = ErrorBody), (status = 429, description = "Too many failed authentications from this address", body = ErrorBody), (status = 503, description = "Starting up or storage unavailable", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    _admin: Admin,
    body: StrictJson<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let name = body.value.account.name;
    buildr_core::validate::account_name("account.name", &name)?;
    let (account, key) = state.engine.create_account(&name).await?;
    Ok(HttpResponse::Created().json(AccountCreated {
        account: AccountView::new(&account),
        api_key: key.key,
        key_prefix: key.prefix,
    }))
}

#[utoipa::path(get, path = "/api/2023-01/accounts", tag = "accounts", responses((status = 200, description = "Every account with the prefixes of its live keys", body = AccountList), (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody), (status = 403, description = "An account key: this route needs the admin token", body = ErrorBody), (status = 429, description = "Too many failed authentications from this address", body = ErrorBody), (status = 503, description = "Starting up or storage unavailable", body = ErrorBody)))]
pub async fn list(state: web::Data<AppState>, _admin: Admin) -> Result<HttpResponse, ApiError> {
    let accounts = state
        .engine
        .list_accounts()?
        .iter()
        .map(AccountView::with_keys)
        .collect();
    Ok(HttpResponse::Ok().json(AccountList { accounts }))
}

#[utoipa::path(post, path = "/api/2023-01/accounts/{id}/keys", tag = "accounts", params(("id" = String, Path, description = "Account id (acc_…)")), request_body(content = Option<NewKeyBody>, description = "None, or {}"), responses((status = 201, description = "A new API key (shown only here)", body = KeyCreated), (status = 400, description = "Invalid request (the field is named)", body = ErrorBody), (status = 404, description = "No such account", body = ErrorBody), (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody), (status = 403, description = "An account key: this route needs the admin token", body = ErrorBody), (status = 429, description = "Too many failed authentications from this address", body = ErrorBody), (status = 503, description = "Starting up or storage unavailable", body = ErrorBody)))]
pub async fn create_key(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
    _body: OptionalJson<NewKeyBody>,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&path)?;
    let key = state.engine.create_api_key(&id).await?;
    Ok(HttpResponse::Created().json(KeyCreated {
        api_key: key.key,
        key_prefix: key.prefix,
    }))
}

#[utoipa::path(delete, path = "/api/2023-01/accounts/{id}/keys/{key_prefix}", tag = "accounts", params(("id" = String, Path, description = "Account id (acc_…)"), ("key_prefix" = String, Path, description = "The key's first 11 characters (bk_xxxxxxxx)")), responses((status = 204, description = "Revoked: the key is refused from now on"), (status = 404, description = "No such account, or no such key of it", body = ErrorBody), (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody), (status = 403, description = "An account key: this route needs the admin token", body = ErrorBody), (status = 429, description = "Too many failed authentications from this address", body = ErrorBody), (status = 503, description = "Starting up or storage unavailable", body = ErrorBody)))]
pub async fn revoke_key(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, prefix) = path.into_inner();
    let id = account_id(&id)?;
    if !api_key::is_prefix(&prefix) {
        return Err(ApiError::not_found("key"));
    }
    state.engine.account(&id)?;
    state.engine.revoke_api_key(&id, &prefix).await?;
    Ok(HttpResponse::NoContent().finish())
}
