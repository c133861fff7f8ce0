//! Variable routes: list and read (viewer; a secret variable's value is never sent back), set
//! and delete (op). Every change is in the audit log.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{audit, body};
use crate::api_error::ApiError;
use crate::auth::{Caller, Role};
use crate::state::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_variables))
        .routes(routes!(get_variable, put_variable, delete_variable))
}

/// A variable as the API shows it: a secret one without its value.
pub fn variable_json(v: &tern_store::variables::StoredVariable) -> Value {
    json!({
        "key": v.key,
        "value": if v.is_secret { Value::Null } else { Value::String(v.value.clone()) },
        "is_secret": v.is_secret,
        "description": v.description,
        "updated_at": v.updated_at,
    })
}

#[utoipa::path(get, path = "/api/v1/variables", tag = "admin",
    responses((status = 200, description = "`{variables: [{key, value, is_secret, description, updated_at}]}` by key; `value` is null for a secret variable")))]
async fn list_variables(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "listing variables")?;
    let vars = s
        .store
        .list_variables()
        .await
        .map_err(ApiError::from_store)?;
    Ok(Json(
        json!({"variables": vars.iter().map(variable_json).collect::<Vec<_>>()}),
    ))
}

#[utoipa::path(get, path = "/api/v1/variables/{key}", tag = "admin",
    params(("key" = String, Path, description = "Variable key")),
    responses((status = 200, description = "`{key, value, is_secret, description, updated_at}`"), (status = 404, description = "No such variable")))]
async fn get_variable(
    State(s): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "reading variables")?;
    let v = s.store.variable(&key).await.map_err(ApiError::from_store)?;
    match v {
        Some(v) => Ok(Json(variable_json(&v))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no variable {key:?}"),
            "GET /api/v1/variables lists them",
        )),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariableBody {
    value: String,
    /// Encrypt the value at rest, never show it again, and mask it in task logs.
    #[serde(default)]
    secret: bool,
    #[serde(default)]
    description: String,
}

#[utoipa::path(put, path = "/api/v1/variables/{key}", tag = "admin", request_body = VariableBody,
    params(("key" = String, Path, description = "Variable key: letters, digits, `_`")),
    responses((status = 200, description = "Set; answered without a secret value"), (status = 400, description = "Bad key or value")))]
async fn put_variable(
    State(s): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    b: Result<Json<VariableBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Op, "setting variables")?;
    let v = body(b)?;
    let secrets = s.secrets.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this server keeps no variables",
            "",
        )
    })?;
    if let Err(e) =
        crate::variables::set(&s.store, secrets, &key, &v.value, v.secret, &v.description).await
    {
        return Err(match e.downcast::<tern_store::StoreError>() {
            Ok(store) => ApiError::from_store(store),
            Err(other) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{other:#}"),
                "keys hold letters, digits and `_`; values at most 64 KiB",
            ),
        });
    }
    let detail = if v.secret { "secret" } else { "" };
    audit(&s, &caller, "variable.put", &key, detail).await?;
    let stored = s.store.variable(&key).await.map_err(ApiError::from_store)?;
    Ok(Json(stored.as_ref().map(variable_json).unwrap_or_default()))
}

#[utoipa::path(delete, path = "/api/v1/variables/{key}", tag = "admin",
    params(("key" = String, Path, description = "Variable key")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such variable")))]
async fn delete_variable(
    State(s): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Op, "deleting variables")?;
    s.store
        .delete_variable(&key)
        .await
        .map_err(ApiError::from_store)?;
    audit(&s, &caller, "variable.delete", &key, "").await?;
    Ok(StatusCode::NO_CONTENT)
}
