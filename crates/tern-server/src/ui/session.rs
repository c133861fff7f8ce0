//! Logging in and out of the web UI, and who is looking at a page.
//!
//! - A session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` under TLS) names a session row;
//!   only its hash is stored.
//! - Every form carries the session's CSRF token (the login form a token bound to a short-lived
//!   cookie of its own), checked in constant time; calls from the page's script send it in
//!   `X-CSRF-Token`.
//! - Failed logins are rate-limited per client address and per user name: after
//!   [`MAX_FAILURES`] within [`WINDOW`], further attempts are refused until the window passes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{cookie, same_secret, Role, SESSION_COOKIE};
use crate::state::AppState;

/// Failed logins allowed per address within [`WINDOW`]; then that address waits.
pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(300);
/// Failed logins for one user name (from any address) before each further try of that name
/// waits a back-off (1 s, doubling, at most [`MAX_USER_BACKOFF`]) after the last failure: an
/// attacker spraying from many addresses is slowed, and the real user is never locked out for
/// longer than that.
pub const USER_FAILURES_BEFORE_BACKOFF: usize = 10;
pub const MAX_USER_BACKOFF: Duration = Duration::from_secs(30);
/// Keys the limiter remembers; past this the oldest are forgotten first.
pub const LIMITER_KEYS: usize = 100_000;
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
const LOGIN_COOKIE: &str = "tern_login";

/// Remembers recent failed logins by key (`ip:ADDRESS`, `user:NAME`), at most
/// [`LIMITER_KEYS`] keys, forgetting the oldest first.
#[derive(Default)]
pub struct LoginLimiter {
    inner: Mutex<Failures>,
}

#[derive(Default)]
struct Failures {
    by_key: HashMap<String, Vec<Instant>>,
    /// Keys in the order they were first remembered.
    order: std::collections::VecDeque<String>,
}

impl LoginLimiter {
    /// Whether an address may try now; how long to wait if not.
    pub fn check_address(&self, key: &str) -> Result<(), Duration> {
        let mut f = self.inner.lock().expect("limiter lock");
        let now = Instant::now();
        let Some(list) = f.by_key.get_mut(key) else {
            return Ok(());
        };
        list.retain(|t| now.duration_since(*t) < WINDOW);
        if list.len() >= MAX_FAILURES {
            return Err(WINDOW.saturating_sub(now.duration_since(list[0])));
        }
        Ok(())
    }

    /// Whether a user name may be tried now (see [`USER_FAILURES_BEFORE_BACKOFF`]).
    pub fn check_user(&self, key: &str) -> Result<(), Duration> {
        let mut f = self.inner.lock().expect("limiter lock");
        let now = Instant::now();
        let Some(list) = f.by_key.get_mut(key) else {
            return Ok(());
        };
        list.retain(|t| now.duration_since(*t) < WINDOW);
        let over = list.len().saturating_sub(USER_FAILURES_BEFORE_BACKOFF - 1);
        if over == 0 {
            return Ok(());
        }
        let backoff = Duration::from_secs(1u64 << (over - 1).min(10)).min(MAX_USER_BACKOFF);
        let since = now.duration_since(*list.last().expect("over > 0"));
        if since < backoff {
            return Err(backoff - since);
        }
        Ok(())
    }

    pub fn failed(&self, key: &str) {
        let mut f = self.inner.lock().expect("limiter lock");
        if !f.by_key.contains_key(key) {
            while f.by_key.len() >= LIMITER_KEYS {
                match f.order.pop_front() {
                    Some(oldest) => {
                        f.by_key.remove(&oldest);
                    }
                    None => break,
                }
            }
            f.order.push_back(key.to_string());
        }
        f.by_key
            .entry(key.to_string())
            .or_default()
            .push(Instant::now());
    }

    pub fn succeeded(&self, key: &str) {
        let mut f = self.inner.lock().expect("limiter lock");
        if f.by_key.remove(key).is_some() {
            f.order.retain(|k| k != key);
        }
    }
}

/// The logged-in user looking at a page, with the CSRF token its forms carry.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub username: String,
    pub role: Role,
    pub csrf: String,
}

impl Viewer {
    pub fn can(&self, role: Role) -> bool {
        self.role >= role
    }

    /// The part of every page's context that describes the viewer.
    pub fn context(&self) -> serde_json::Value {
        json!({
            "username": self.username,
            "role": self.role.as_str(),
            "csrf": self.csrf,
            "can_user": self.can(Role::User),
            "can_op": self.can(Role::Op),
            "can_admin": self.can(Role::Admin),
        })
    }
}

/// Where an unauthenticated page request goes: the login page, coming back afterwards.
pub struct ToLogin(String);

impl IntoResponse for ToLogin {
    fn into_response(self) -> Response {
        let next = urlencode(&self.0);
        Redirect::to(&format!("/login?next={next}")).into_response()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Viewer, Response> {
        let here = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let Some(value) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(ToLogin(here).into_response());
        };
        let session = match s.store.find_session(value).await {
            Ok(Some(session)) => session,
            Ok(None) => return Err(ToLogin(here).into_response()),
            Err(e) => return Err(crate::api_error::ApiError::unavailable(e).into_response()),
        };
        let role = Role::parse(&session.user.role).unwrap_or(Role::Viewer);
        Ok(Viewer {
            username: session.user.username,
            role,
            csrf: session.csrf,
        })
    }
}

/// Whether a form carries the session's CSRF token.
pub fn form_csrf_ok(viewer: &Viewer, sent: &str) -> bool {
    same_secret(sent, &viewer.csrf)
}

/// The answer to a form without the session's CSRF token.
pub fn csrf_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        "the form's CSRF token is missing or stale: reload the page and try again",
    )
        .into_response()
}

fn cookie_header(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are hex")
}

#[derive(Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Only paths of this site are followed after login (no open redirect): an absolute path,
/// not `//host` nor `/\\host`, with no control character (browsers drop tabs and newlines,
/// so `/\t/evil.example` would leave the site) and of sane length.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && n.len() <= 2048
                && !n[1..].starts_with(['/', '\\'])
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control()) =>
        {
            n.into()
        }
        _ => "/dags".into(),
    }
}

pub async fn login_page(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Response {
    login_form(&s, q.next.as_deref(), None, StatusCode::OK)
}

fn login_form(
    s: &AppState,
    next: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let token = tern_store::agents::random_token();
    let html = super::render(
        "login.html",
        json!({"next": safe_next(next), "error": error, "login_csrf": token}),
    );
    let mut resp = (status, html).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(LOGIN_COOKIE, &token, 1800, s.options.tls),
    );
    resp
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

pub async fn login(
    State(s): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let bound = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if f.csrf.is_empty() || !same_secret(&f.csrf, bound) {
        return login_form(
            &s,
            f.next.as_deref(),
            Some("The form expired; please log in again."),
            StatusCode::FORBIDDEN,
        );
    }
    let by_addr = format!("ip:{}", addr.ip());
    let by_user = format!("user:{}", f.username);
    let checks = [
        s.login_limiter.check_address(&by_addr),
        s.login_limiter.check_user(&by_user),
    ];
    for check in checks {
        if let Err(wait) = check {
            let msg = format!(
                "Too many failed logins; try again in {} s.",
                wait.as_secs().max(1)
            );
            return login_form(
                &s,
                f.next.as_deref(),
                Some(&msg),
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
    }
    let user = match s.store.find_user(&f.username).await {
        Ok(u) => u,
        Err(e) => return crate::api_error::ApiError::unavailable(e).into_response(),
    };
    // Verify against a dummy hash for unknown users, so timing does not tell names apart.
    let hash = user
        .as_ref()
        .filter(|u| !u.disabled)
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| DUMMY_HASH.clone());
    let password = f.password.clone();
    let ok = tokio::task::spawn_blocking(move || crate::auth::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|u| ok && !u.disabled) else {
        s.login_limiter.failed(&by_addr);
        s.login_limiter.failed(&by_user);
        tracing::warn!(user = %f.username, addr = %addr.ip(), "failed web login");
        return login_form(
            &s,
            f.next.as_deref(),
            Some("Wrong user name or password."),
            StatusCode::UNAUTHORIZED,
        );
    };
    s.login_limiter.succeeded(&by_user);
    let (value, _csrf) = match s.store.create_session(user.id, SESSION_TTL).await {
        Ok(v) => v,
        Err(e) => return crate::api_error::ApiError::unavailable(e).into_response(),
    };
    let _ = s.store.audit(&user.username, "user.login", "web", "").await;
    let mut resp = Redirect::to(&safe_next(f.next.as_deref())).into_response();
    let headers = resp.headers_mut();
    headers.append(
        header::SET_COOKIE,
        cookie_header(
            SESSION_COOKIE,
            &value,
            SESSION_TTL.as_secs() as i64,
            s.options.tls,
        ),
    );
    headers.append(
        header::SET_COOKIE,
        cookie_header(LOGIN_COOKIE, "", 0, s.options.tls),
    );
    resp
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(s): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !form_csrf_ok(&viewer, &f.csrf) {
        return csrf_refused();
    }
    if let Some(value) = cookie(&headers, SESSION_COOKIE) {
        let _ = s.store.end_session(value).await;
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(SESSION_COOKIE, "", 0, s.options.tls),
    );
    resp
}

/// An argon2id hash of a random password nobody knows, for unknown user names.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| crate::auth::hash_password(&crate::auth::random_password()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_site_are_followed_after_login() {
        for ok in ["/dags", "/dags/d/runs/r?x=1", "/api/v1/docs"] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/a\r\nSet-Cookie: x=1",
            "https://evil.example",
            "evil.example",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/dags", "{bad:?}");
        }
        assert_eq!(safe_next(Some(&format!("/{}", "a".repeat(5000)))), "/dags");
    }

    #[test]
    fn one_address_waits_but_a_user_is_only_slowed() {
        let l = LoginLimiter::default();
        for _ in 0..MAX_FAILURES {
            assert!(l.check_address("ip:10.0.0.9").is_ok());
            l.failed("ip:10.0.0.9");
        }
        assert!(
            l.check_address("ip:10.0.0.9").is_err(),
            "that address waits"
        );
        assert!(
            l.check_address("ip:10.0.0.10").is_ok(),
            "another address does not"
        );
        // Failures for one user from many addresses: after the allowance, each try waits a
        // back-off of seconds, never a lock-out of minutes.
        for _ in 0..USER_FAILURES_BEFORE_BACKOFF - 1 {
            l.failed("user:admin");
            assert!(l.check_user("user:admin").is_ok());
        }
        for _ in 0..20 {
            l.failed("user:admin");
            let wait = l.check_user("user:admin").expect_err("backs off");
            assert!(wait <= MAX_USER_BACKOFF, "{wait:?}");
        }
        l.succeeded("user:admin");
        assert!(l.check_user("user:admin").is_ok());
    }

    #[test]
    fn the_limiter_forgets_its_oldest_keys_first() {
        let l = LoginLimiter::default();
        for i in 0..LIMITER_KEYS + 10 {
            l.failed(&format!("ip:{i}"));
        }
        let f = l.inner.lock().unwrap();
        assert_eq!(f.by_key.len(), LIMITER_KEYS);
        assert!(!f.by_key.contains_key("ip:0"), "the oldest is gone");
        assert!(f.by_key.contains_key(&format!("ip:{}", LIMITER_KEYS + 9)));
        assert!(
            f.by_key.contains_key("ip:10"),
            "only as many as needed were forgotten"
        );
    }
}
