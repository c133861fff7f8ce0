//! Who may do what: the roles and their permissions, password hashing (argon2), and the
//! extractor that authenticates API calls: by bearer token, or by the web UI's session cookie,
//! in which case every call that changes something must also carry the session's CSRF token
//! in the `X-CSRF-Token` header.
//!
//! Roles are ordered: each one may do everything the ones below it may. `viewer` reads;
//! `user` also triggers, clears, pauses and marks; `op` also manages pools, connections and
//! agents; `admin` also manages users and reads the audit log.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use tern_store::users::User;
use tern_store::Store;

use crate::api_error::ApiError;

/// A role, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    User,
    Op,
    Admin,
}

impl Role {
    pub const NAMES: &'static [&'static str] = &["viewer", "user", "op", "admin"];

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "user" => Some(Role::User),
            "op" => Some(Role::Op),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        Role::NAMES[self as usize]
    }
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password")
        .to_string()
}

/// Whether `password` matches a stored hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A random password for generated accounts: 20 letters and digits.
pub fn random_password() -> String {
    use argon2::password_hash::rand_core::RngCore;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = [0u8; 20];
    OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The authenticated caller of an API route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub role: Role,
}

/// The cookie that carries a web session.
pub const SESSION_COOKIE: &str = "tern_session";
/// The header that carries a session's CSRF token on calls that change something.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Caller {
    /// The name the audit log records.
    pub fn actor(&self) -> String {
        self.user.username.clone()
    }

    /// Refuses the call unless the caller's role is at least `needed`.
    pub fn require(&self, needed: Role, what: &str) -> Result<(), ApiError> {
        if self.role >= needed {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{what} needs the {} role; user {:?} is {}",
                needed.as_str(),
                self.user.username,
                self.role.as_str()
            ),
            "ask an admin for a role with this permission",
        ))
    }
}

/// State the extractor needs: the store.
pub trait HasStore {
    fn store(&self) -> &Store;
}

impl<S: HasStore + Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Caller, ApiError> {
        let unauthorized = |message: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                message.to_string(),
                "send `Authorization: Bearer <token>`; `tern tokens create USER` makes one",
            )
        };
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(header) = header else {
            let Some(value) = cookie(&parts.headers, SESSION_COOKIE) else {
                return Err(unauthorized("this route needs an API token"));
            };
            let session = state
                .store()
                .find_session(value)
                .await
                .map_err(ApiError::unavailable)?
                .ok_or_else(|| unauthorized("the session has ended; log in again"))?;
            let safe = matches!(
                parts.method,
                axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
            );
            let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !safe && !sent.is_some_and(|t| same_secret(t, &session.csrf)) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "a change made with a session cookie needs the session's CSRF token",
                    "send the X-CSRF-Token header the page gives (meta name=csrf-token)",
                ));
            }
            return caller_of(session.user);
        };
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let user = state
            .store()
            .authenticate_token(token.trim())
            .await
            .map_err(ApiError::unavailable)?
            .ok_or_else(|| unauthorized("the token is unknown, revoked or expired"))?;
        caller_of(user)
    }
}

fn caller_of(user: User) -> Result<Caller, ApiError> {
    let role = Role::parse(&user.role).ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("user {:?} has an unknown role", user.username),
            "an admin can set a role with `tern users add`",
        )
    })?;
    Ok(Caller { user, role })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_salt_and_verify() {
        let h1 = hash_password("correct horse");
        let h2 = hash_password("correct horse");
        assert!(h1.starts_with("$argon2id$"));
        assert_ne!(h1, h2, "a fresh salt each time");
        assert!(verify_password("correct horse", &h1));
        assert!(!verify_password("wrong", &h1));
        assert!(!verify_password("x", "not a hash"));
        assert_eq!(random_password().len(), 20);
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin > Role::Op && Role::Op > Role::User && Role::User > Role::Viewer);
        for name in Role::NAMES {
            assert_eq!(Role::parse(name).unwrap().as_str(), *name);
        }
        assert_eq!(Role::parse("root"), None);
    }
}
