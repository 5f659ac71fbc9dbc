//! `/accounts` (admin token only): create accounts, list them, add and revoke their API keys. A key is
//! in the answer that made it and nowhere else.

use crate::auth::Admin;
use crate::error::ApiError;
use crate::json::{OptionalJson, StrictJson};
use crate::views::AccountView;
use crate::AppState;
use actix_web::{web, HttpResponse};
use buildr_core::{api_key, AccountId};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    account: AccountInput,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountInput {
    name: String,
}

/// `POST /accounts/{id}/keys` takes no fields; an empty body or `{}` both do.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {}

fn account_id(raw: &str) -> Result<AccountId, ApiError> {
    // An id that cannot exist is simply not found.
    raw.parse().map_err(|_| ApiError::not_found("account"))
}

pub async fn create(
    state: web::Data<AppState>,
    _admin: Admin,
    body: StrictJson<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let name = body.value.account.name;
    buildr_core::validate::account_name("account.name", &name)?;
    let (account, key) = state.engine.create_account(&name).await?;
    Ok(HttpResponse::Created().json(json!({
        "account": AccountView::new(&account),
        "api_key": key.key,
        "key_prefix": key.prefix,
    })))
}

pub async fn list(state: web::Data<AppState>, _admin: Admin) -> Result<HttpResponse, ApiError> {
    let accounts: Vec<AccountView> = state
        .engine
        .list_accounts()?
        .iter()
        .map(AccountView::with_keys)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "accounts": accounts })))
}

pub async fn create_key(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<String>,
    _body: OptionalJson<NewKeyBody>,
) -> Result<HttpResponse, ApiError> {
    let id = account_id(&path)?;
    let key = state.engine.create_api_key(&id).await?;
    Ok(HttpResponse::Created().json(json!({ "api_key": key.key, "key_prefix": key.prefix })))
}

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
