//! The administration pages: pools, agents (with activation codes), connections (names, types
//! and hosts; secrets never shown), users and tokens, and the audit log. Changes are made by
//! the page's script through the REST API, which checks roles and records the audit log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::session::Viewer;
use super::{error_page, render, store_fail};
use crate::auth::Role;
use crate::state::AppState;

pub async fn pools(State(s): State<AppState>, viewer: Viewer) -> Response {
    match s.store.list_pools().await {
        Ok(pools) => render(
            "pools.html",
            json!({"me": viewer.context(), "nav": "pools", "pools": pools}),
        ),
        Err(e) => store_fail(&viewer, e),
    }
}

pub async fn variables(State(s): State<AppState>, viewer: Viewer) -> Response {
    match s.store.list_variables().await {
        Ok(vars) => render(
            "variables.html",
            json!({
                "me": viewer.context(), "nav": "variables",
                "variables": vars.iter().map(crate::api::variables::variable_json).collect::<Vec<_>>(),
            }),
        ),
        Err(e) => store_fail(&viewer, e),
    }
}

pub async fn agents(State(s): State<AppState>, viewer: Viewer) -> Response {
    let agents = match s.store.list_agents().await {
        Ok(a) => a,
        Err(e) => return store_fail(&viewer, e),
    };
    // Activation codes are an operator's business (the codes themselves are never stored).
    let activations = if viewer.can(Role::Op) {
        match s.store.list_activations(50).await {
            Ok(a) => a,
            Err(e) => return store_fail(&viewer, e),
        }
    } else {
        Vec::new()
    };
    render(
        "agents.html",
        json!({"me": viewer.context(), "nav": "agents", "agents": agents,
               "activations": activations}),
    )
}

pub async fn connections(State(s): State<AppState>, viewer: Viewer) -> Response {
    match s.store.list_connections().await {
        Ok(list) => {
            let rows: Vec<_> = list
                .iter()
                .map(|c| {
                    json!({"name": c.name, "conn_type": c.conn_type, "host": c.host,
                                "login": c.login, "description": c.description,
                                "updated_at": c.updated_at})
                })
                .collect();
            render(
                "connections.html",
                json!({"me": viewer.context(), "nav": "connections", "connections": rows,
                       "types": tern_worker::connections::KNOWN_SCHEMES}),
            )
        }
        Err(e) => store_fail(&viewer, e),
    }
}

pub async fn users(State(s): State<AppState>, viewer: Viewer) -> Response {
    let tokens = match s.store.list_tokens().await {
        Ok(t) => t,
        Err(e) => return store_fail(&viewer, e),
    };
    let tokens: Vec<_> = tokens
        .into_iter()
        .filter(|t| viewer.can(Role::Admin) || t.username == viewer.username)
        .collect();
    let users = if viewer.can(Role::Admin) {
        match s.store.list_users().await {
            Ok(u) => u,
            Err(e) => return store_fail(&viewer, e),
        }
    } else {
        Vec::new()
    };
    render(
        "users.html",
        json!({"me": viewer.context(), "nav": "users", "users": users, "tokens": tokens}),
    )
}

pub async fn audit(State(s): State<AppState>, viewer: Viewer) -> Response {
    if !viewer.can(Role::Admin) {
        return error_page(
            &viewer,
            StatusCode::FORBIDDEN,
            "the audit log needs the admin role",
        );
    }
    match s.store.audit_log(500).await {
        Ok(entries) => render(
            "audit.html",
            json!({"me": viewer.context(), "nav": "audit", "entries": entries}),
        ),
        Err(e) => store_fail(&viewer, e),
    }
}
