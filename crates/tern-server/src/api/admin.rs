//! Administration routes: pools and agents and connections (`op`), users and the audit log
//! (`admin`), API tokens (your own; anyone's as `admin`). Secrets are never returned: a
//! connection shows its type, host and login, a token its record (its value only once, when
//! created), an activation code once.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{audit, body};
use crate::api_error::ApiError;
use crate::auth::{Caller, Role};
use crate::state::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_pools))
        .routes(routes!(put_pool, delete_pool))
        .routes(routes!(list_agents))
        .routes(routes!(revoke_agent))
        .routes(routes!(list_activations, create_activation))
        .routes(routes!(cancel_activation))
        .routes(routes!(list_connections, create_connection))
        .routes(routes!(get_connection, delete_connection))
        .routes(routes!(test_connection))
        .routes(routes!(export_connections))
        .routes(routes!(import_connections))
        .routes(routes!(list_users, create_user))
        .routes(routes!(delete_user))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(audit_log))
}

/// Longest a token may be made to last, in days (ten years; or no expiry at all).
pub const MAX_TOKEN_DAYS: i64 = 3650;

fn bad(message: impl Into<String>, hint: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message, hint)
}

#[utoipa::path(get, path = "/api/v1/pools", tag = "admin",
    responses((status = 200, description = "`{pools: [{name, slots, description, used}]}`")))]
async fn list_pools(State(s): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "listing pools")?;
    let pools = s.store.list_pools().await.map_err(ApiError::from_store)?;
    Ok(Json(json!({"pools": pools})))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolBody {
    /// Slots (0 or more).
    slots: i64,
    #[serde(default)]
    description: String,
}

#[utoipa::path(put, path = "/api/v1/pools/{name}", tag = "admin", request_body = PoolBody,
    params(("name" = String, Path, description = "Pool name")),
    responses((status = 200, description = "Created or resized"), (status = 400, description = "Slots outside 0 to 1,000,000")))]
async fn put_pool(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    b: Result<Json<PoolBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Op, "managing pools")?;
    let p = body(b)?;
    s.store
        .set_pool(&name, p.slots, &p.description)
        .await
        .map_err(ApiError::from_store)?;
    audit(
        &s,
        &caller,
        "pool.set",
        &name,
        &format!("slots={}", p.slots),
    )
    .await?;
    Ok(Json(json!({"name": name, "slots": p.slots})))
}

#[utoipa::path(delete, path = "/api/v1/pools/{name}", tag = "admin",
    params(("name" = String, Path, description = "Pool name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such pool")))]
async fn delete_pool(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Op, "managing pools")?;
    s.store
        .delete_pool(&name)
        .await
        .map_err(ApiError::from_store)?;
    audit(&s, &caller, "pool.delete", &name, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "admin",
    responses((status = 200, description = "`{agents}`: site, queues, version, connected, last_seen, running")))]
async fn list_agents(State(s): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "listing agents")?;
    let agents = s.store.list_agents().await.map_err(ApiError::from_store)?;
    Ok(Json(json!({"agents": agents})))
}

#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "admin",
    params(("id" = i64, Path, description = "Agent id")),
    responses((status = 204, description = "Revoked: the agent is refused from now on"), (status = 404, description = "No such agent")))]
async fn revoke_agent(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Op, "revoking agents")?;
    s.store.get_agent(id).await.map_err(ApiError::from_store)?;
    s.store
        .revoke_agent(id)
        .await
        .map_err(ApiError::from_store)?;
    audit(&s, &caller, "agent.revoke", &id.to_string(), "").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivationBody {
    /// The site the agent runs at; it serves the queue `site:SITE`.
    site: String,
    /// More queues the agent serves.
    #[serde(default)]
    queues: Vec<String>,
    /// How long the code is valid, in hours (default 24).
    #[serde(default)]
    valid_hours: Option<u64>,
}

#[utoipa::path(post, path = "/api/v1/agents/activations", tag = "admin", request_body = ActivationBody,
    responses((status = 201, description = "`{code, site, queues, expires_at}`: the one-time code, shown once"),
              (status = 400, description = "Bad site name")))]
async fn create_activation(
    State(s): State<AppState>,
    caller: Caller,
    b: Result<Json<ActivationBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Op, "creating agent activation codes")?;
    let a = body(b)?;
    let ttl = Duration::from_secs(a.valid_hours.unwrap_or(24).clamp(1, 24 * 30) * 3600);
    let code = s
        .store
        .create_activation(&a.site, &a.queues, ttl)
        .await
        .map_err(ApiError::from_store)?;
    audit(&s, &caller, "agent.activation", &a.site, "").await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(code).unwrap_or_default()),
    ))
}

#[utoipa::path(get, path = "/api/v1/agents/activations", tag = "admin",
    responses((status = 200, description = "`{activations: [{id, site, queues, created_at, expires_at, used_at, agent_id, state}]}`, newest 200 first; `state` is waiting, used or expired; never a code")))]
async fn list_activations(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Op, "listing agent activation codes")?;
    let list = s
        .store
        .list_activations(200)
        .await
        .map_err(ApiError::from_store)?;
    Ok(Json(json!({"activations": list})))
}

#[utoipa::path(delete, path = "/api/v1/agents/activations/{id}", tag = "admin",
    params(("id" = i64, Path, description = "Activation code id")),
    responses((status = 204, description = "Cancelled: the code can no longer be used"),
              (status = 404, description = "No such code"),
              (status = 409, description = "Already used: revoke its agent instead")))]
async fn cancel_activation(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Op, "cancelling agent activation codes")?;
    s.store
        .cancel_activation(id)
        .await
        .map_err(ApiError::from_store)?;
    audit(&s, &caller, "agent.activation.cancel", &id.to_string(), "").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A connection as anyone may see it: no password, no extra fields.
pub fn connection_json(c: &tern_store::connections::StoredConnection) -> Value {
    json!({
        "name": c.name, "conn_type": c.conn_type, "host": c.host, "login": c.login,
        "description": c.description, "created_at": c.created_at, "updated_at": c.updated_at,
    })
}

#[utoipa::path(get, path = "/api/v1/connections", tag = "admin",
    responses((status = 200, description = "`{connections: [{name, conn_type, host, login, description}]}`; never a secret")))]
async fn list_connections(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "listing connections")?;
    let list: Vec<Value> = s
        .store
        .list_connections()
        .await
        .map_err(ApiError::from_store)?
        .iter()
        .map(connection_json)
        .collect();
    Ok(Json(json!({"connections": list})))
}

#[utoipa::path(get, path = "/api/v1/connections/{name}", tag = "admin",
    params(("name" = String, Path, description = "Connection name")),
    responses((status = 200, description = "The connection without its secret"), (status = 404, description = "No such connection")))]
async fn get_connection(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "reading a connection")?;
    let c = s
        .store
        .find_connection(&name)
        .await
        .map_err(ApiError::from_store)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no connection {name:?} on the control plane"),
                "agents may still have it in their own agent.toml",
            )
        })?;
    Ok(Json(connection_json(&c)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionBody {
    name: String,
    /// URI form, e.g. `postgres://user:pw@host:5432/db`; or leave it out and give the typed
    /// fields below.
    #[serde(default)]
    uri: Option<String>,
    /// Typed form: the type (`postgres`, `mysql`, `s3`, …).
    #[serde(default)]
    conn_type: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// The database, bucket path or folder.
    #[serde(default)]
    schema: Option<String>,
    /// Extra fields.
    #[serde(default)]
    #[schema(value_type = Object)]
    extra: Map<String, Value>,
    #[serde(default)]
    description: String,
    /// Replace an existing connection of that name.
    #[serde(default)]
    replace: bool,
}

impl ConnectionBody {
    /// The URI given, or the one the typed fields make; exactly one form must be used.
    fn uri(&self) -> Result<String, ApiError> {
        let typed = self.conn_type.is_some()
            || self.host.is_some()
            || self.port.is_some()
            || self.login.is_some()
            || self.password.is_some()
            || self.schema.is_some();
        match (&self.uri, typed) {
            (Some(uri), false) => Ok(uri.clone()),
            (Some(_), true) => Err(bad(
                "give the connection as a uri or as typed fields, not both",
                "drop `uri`, or drop conn_type/host/port/login/password/schema",
            )),
            (None, true) => tern_worker::connections::ConnectionParts {
                conn_type: self.conn_type.clone().unwrap_or_default(),
                host: self.host.clone().unwrap_or_default(),
                port: self.port,
                login: self.login.clone().unwrap_or_default(),
                password: self.password.clone().unwrap_or_default(),
                schema: self.schema.clone().unwrap_or_default(),
            }
            .to_uri()
            .map_err(|e| bad(e, "conn_type is one of the types the message lists; host is a name or address")),
            (None, false) => Err(bad(
                "the connection has no uri and no conn_type",
                "give `uri` (type://login:password@host:port/path), or `conn_type` with host, port, login, password, schema",
            )),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/connections", tag = "admin", request_body = ConnectionBody,
    responses((status = 201, description = "Stored, sealed at rest; answered without its secret"),
              (status = 400, description = "Unparsable URI"), (status = 409, description = "Exists (use replace)")))]
async fn create_connection(
    State(s): State<AppState>,
    caller: Caller,
    b: Result<Json<ConnectionBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Op, "managing connections")?;
    let c = body(b)?;
    let uri = c.uri()?;
    let secrets = secret_box(&s)?;
    if let Err(e) = crate::connections::add(
        &s.store,
        secrets,
        &c.name,
        &uri,
        c.extra,
        &c.description,
        c.replace,
    )
    .await
    {
        return Err(write_error(
            e,
            "write the URI as type://login:password@host:port/path",
        ));
    }
    audit(&s, &caller, "connection.put", &c.name, "").await?;
    let stored = s
        .store
        .find_connection(&c.name)
        .await
        .map_err(ApiError::from_store)?
        .map(|c| connection_json(&c))
        .unwrap_or_default();
    Ok((StatusCode::CREATED, Json(stored)))
}

/// A failed connection write: the store's own errors (a taken name, an outage) as they are,
/// anything else (the connection did not parse: its messages never echo the password) a 400.
fn write_error(e: anyhow::Error, hint: &str) -> ApiError {
    match e.downcast::<tern_store::StoreError>() {
        Ok(store) => ApiError::from_store(store),
        Err(other) => bad(format!("{other:#}"), hint),
    }
}

/// The control plane's connections store, or 503 on a server that keeps none.
fn secret_box(s: &AppState) -> Result<&crate::secrets::SecretBox, ApiError> {
    s.secrets.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this server keeps no connections",
            "",
        )
    })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Passwords and secret extra fields in clear (role `admin`; audited).
    #[serde(default)]
    include_secrets: bool,
}

#[utoipa::path(get, path = "/api/v1/connections-export", tag = "admin", params(ExportQuery),
    responses((status = 200, description = "`{connections: [{name, uri, extra, description, secrets_included}]}` as `tern connections export` prints them; secrets masked unless `include_secrets` (admin)")))]
async fn export_connections(
    State(s): State<AppState>,
    caller: Caller,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = super::query(q)?;
    if q.include_secrets {
        caller.require(Role::Admin, "exporting connections with their secrets")?;
    } else {
        caller.require(Role::Op, "exporting connections")?;
    }
    let list = crate::connections::export(&s.store, secret_box(&s)?, q.include_secrets)
        .await
        .map_err(|e| {
            tracing::error!("connections export: {e:#}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the connections could not be read",
                "the server log has the cause",
            )
        })?;
    if q.include_secrets {
        audit(&s, &caller, "connection.export", "", "with secrets").await?;
    }
    Ok(Json(json!({"connections": list})))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// What an export lists (with its secrets).
    #[schema(value_type = Vec<Object>)]
    connections: Value,
    /// Replace connections of the same name.
    #[serde(default)]
    replace: bool,
}

#[utoipa::path(post, path = "/api/v1/connections-import", tag = "admin", request_body = ImportBody,
    responses((status = 200, description = "`{imported: [names]}`, each validated and sealed at rest"),
              (status = 400, description = "Not an export, an entry exported without its secrets, or an invalid one (named)"),
              (status = 409, description = "A name exists and `replace` is false")))]
async fn import_connections(
    State(s): State<AppState>,
    caller: Caller,
    b: Result<Json<ImportBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Op, "importing connections")?;
    let b = body(b)?;
    let entries = crate::connections::import_entries(&b.connections).map_err(|e| {
        bad(
            format!("{e:#}"),
            "send what GET /api/v1/connections-export?include_secrets=true answers",
        )
    })?;
    if let Err(e) = crate::connections::import(&s.store, secret_box(&s)?, &entries, b.replace).await
    {
        return Err(write_error(
            e,
            "write each URI as type://login:password@host:port/path",
        ));
    }
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    audit(&s, &caller, "connection.import", &names.join(","), "").await?;
    Ok(Json(json!({"imported": names})))
}

/// How long a connection test may take (an unreachable host otherwise waits for the OS).
const CONNECTION_TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

#[utoipa::path(post, path = "/api/v1/connections/{name}/test", tag = "admin",
    params(("name" = String, Path, description = "Connection name")),
    responses((status = 200, description = "`{ok, message}`: whether the control plane reached it (`SELECT 1` on a database, a listing on an object store) and what happened"),
              (status = 404, description = "No such connection on the control plane")))]
async fn test_connection(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Op, "testing connections")?;
    let secrets = secret_box(&s)?;
    let parsed = crate::connections::parsed(&s.store, secrets, &name)
        .await
        .map_err(|e| match e.downcast::<tern_store::StoreError>() {
            Ok(store) => ApiError::from_store(store),
            Err(other) => {
                tracing::error!("connection {name}: {other:#}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("connection {name:?} could not be opened"),
                    "the server log has the cause (was the secret key changed?)",
                )
            }
        })?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no connection {name:?} on the control plane"),
                "a site's own connections are tested on the agent: `tern connections test` there",
            )
        })?;
    let (ok, message) = match tokio::time::timeout(
        CONNECTION_TEST_TIMEOUT,
        tern_worker::data::test_connection(&parsed),
    )
    .await
    {
        Ok(Ok(what)) => (true, what),
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (
            false,
            format!(
                "no answer within {}",
                tern_core::format_duration(CONNECTION_TEST_TIMEOUT)
            ),
        ),
    };
    Ok(Json(json!({"ok": ok, "message": message})))
}

#[utoipa::path(delete, path = "/api/v1/connections/{name}", tag = "admin",
    params(("name" = String, Path, description = "Connection name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such connection")))]
async fn delete_connection(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Op, "managing connections")?;
    s.store
        .delete_connection(&name)
        .await
        .map_err(ApiError::from_store)?;
    audit(&s, &caller, "connection.delete", &name, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/users", tag = "admin",
    responses((status = 200, description = "`{users: [{id, username, role, created_at, disabled}]}`")))]
async fn list_users(State(s): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin, "listing users")?;
    let users = s.store.list_users().await.map_err(ApiError::from_store)?;
    Ok(Json(json!({"users": users})))
}

#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "admin",
    params(("username" = String, Path, description = "User name")),
    responses((status = 204, description = "Deleted with their tokens and sessions"),
              (status = 404, description = "No such user"), (status = 409, description = "The last admin")))]
async fn delete_user(
    State(s): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin, "deleting users")?;
    s.store
        .delete_user(&username)
        .await
        .map_err(ApiError::from_store)?;
    audit(&s, &caller, "user.delete", &username, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    username: String,
    /// `viewer`, `user`, `op` or `admin`.
    role: String,
    /// At least 12 characters; omitted, one is generated and returned once.
    #[serde(default)]
    password: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/users", tag = "admin", request_body = UserBody,
    responses((status = 201, description = "`{user, password?}` (a generated password is returned once)"),
              (status = 400, description = "Bad role, name or password"), (status = 409, description = "Name taken")))]
async fn create_user(
    State(s): State<AppState>,
    caller: Caller,
    b: Result<Json<UserBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Admin, "creating users")?;
    let u = body(b)?;
    if Role::parse(&u.role).is_none() {
        return Err(bad(
            format!("unknown role {:?}", u.role),
            "role is one of viewer, user, op, admin",
        ));
    }
    if u.username.is_empty()
        || !u
            .username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(bad(
            format!("bad user name {:?}", u.username),
            "use letters, digits, `-`, `_`, `.` and `@`",
        ));
    }
    let generated = u.password.is_none();
    let password = u.password.unwrap_or_else(crate::auth::random_password);
    if password.chars().count() < 12 {
        return Err(bad(
            "the password is shorter than 12 characters",
            "choose a longer one, or omit it to have one generated",
        ));
    }
    let plain = password.clone();
    let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&plain))
        .await
        .map_err(|_| bad("hashing failed", ""))?;
    let user = s
        .store
        .create_user(&u.username, &u.role, &hash)
        .await
        .map_err(ApiError::from_store)?;
    audit(&s, &caller, "user.create", &u.username, &u.role).await?;
    let mut answer = json!({"user": user});
    if generated {
        answer["password"] = json!(password);
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "admin",
    responses((status = 200, description = "`{tokens}`: your own tokens, or every token for an admin; never their values")))]
async fn list_tokens(State(s): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer, "listing tokens")?;
    let tokens: Vec<_> = s
        .store
        .list_tokens()
        .await
        .map_err(ApiError::from_store)?
        .into_iter()
        .filter(|t| caller.role == Role::Admin || t.username == caller.user.username)
        .collect();
    Ok(Json(json!({"tokens": tokens})))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// Whose token (default: yours; another user's needs admin).
    #[serde(default)]
    username: Option<String>,
    /// A label, e.g. `ci`.
    #[serde(default)]
    name: String,
    /// Days until it expires (default: never).
    #[serde(default)]
    expires_days: Option<i64>,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "admin", request_body = TokenBody,
    responses((status = 201, description = "`{token, value}`: the value is shown once"),
              (status = 403, description = "Another user's token without admin")))]
async fn create_token(
    State(s): State<AppState>,
    caller: Caller,
    b: Result<Json<TokenBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Viewer, "creating a token")?;
    let t = body(b)?;
    let username = t.username.unwrap_or_else(|| caller.user.username.clone());
    if username != caller.user.username {
        caller.require(Role::Admin, "creating a token for another user")?;
    }
    let expires = match t.expires_days {
        Some(d) if !(1..=MAX_TOKEN_DAYS).contains(&d) => {
            return Err(bad(
                format!("expires_days must be from 1 to {MAX_TOKEN_DAYS}, got {d}"),
                "leave it out for a token that does not expire",
            ))
        }
        Some(d) => Some(chrono::Utc::now() + chrono::Duration::days(d)),
        None => None,
    };
    let (token, value) = s
        .store
        .create_token(&username, &t.name, expires)
        .await
        .map_err(ApiError::from_store)?;
    audit(&s, &caller, "token.create", &username, &t.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "value": value})),
    ))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "admin",
    params(("id" = i64, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 404, description = "No such token")))]
async fn revoke_token(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Viewer, "revoking a token")?;
    let owner = s
        .store
        .list_tokens()
        .await
        .map_err(ApiError::from_store)?
        .into_iter()
        .find(|t| t.id == id)
        .map(|t| t.username);
    if owner.as_deref() != Some(caller.user.username.as_str()) {
        caller.require(Role::Admin, "revoking another user's token")?;
    }
    s.store
        .revoke_token(id)
        .await
        .map_err(ApiError::from_store)?;
    audit(&s, &caller, "token.revoke", &id.to_string(), "").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// How many entries, newest first (1–1000, default 100).
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, description = "`{entries: [{at, actor, action, target, detail}]}`, newest first")))]
async fn audit_log(
    State(s): State<AppState>,
    caller: Caller,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = super::query(q)?;
    caller.require(Role::Admin, "reading the audit log")?;
    let entries = s
        .store
        .audit_log(q.limit.clamp(1, 1000))
        .await
        .map_err(ApiError::from_store)?;
    Ok(Json(json!({"entries": entries})))
}
