//! Encryption at rest of the control plane's secrets (connection URIs and extras): AES-256-GCM
//! with a key from `TERN_SECRET_KEY` (32 bytes, base64 or hex) or, when unset, from
//! `HOME/secret.key`, created with mode 0600 on first start. Sealed values read
//! `v1:<base64(nonce ‖ ciphertext)>`.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;

/// Environment variable holding the key.
pub const KEY_ENV: &str = "TERN_SECRET_KEY";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{0}")]
    Key(String),
    #[error(
        "a stored secret cannot be decrypted with this key (was {KEY_ENV} or secret.key changed?)"
    )]
    Decrypt,
}

/// Seals and opens secrets with the control plane's key.
pub struct SecretBox {
    cipher: Aes256Gcm,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn parse_key(text: &str, source: &str) -> Result<[u8; 32], SecretError> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(t).map_err(|e| SecretError::Key(format!("{source}: {e}")))?
    } else {
        b64()
            .decode(t)
            .map_err(|e| SecretError::Key(format!("{source}: not base64 or hex ({e})")))?
    };
    bytes.try_into().map_err(|b: Vec<u8>| {
        SecretError::Key(format!(
            "{source}: the key must be 32 bytes (base64 or 64 hex digits), got {}",
            b.len()
        ))
    })
}

impl SecretBox {
    pub fn from_key(key: [u8; 32]) -> SecretBox {
        SecretBox {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        }
    }

    /// The key from `TERN_SECRET_KEY`, else `home/secret.key` (created if missing).
    pub fn load(home: &Path) -> Result<SecretBox, SecretError> {
        if let Ok(v) = std::env::var(KEY_ENV) {
            return Ok(SecretBox::from_key(parse_key(&v, KEY_ENV)?));
        }
        let path = home.join("secret.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(SecretBox::from_key(parse_key(
                &text,
                &path.display().to_string(),
            )?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let key: [u8; 32] = Aes256Gcm::generate_key(OsRng).into();
                std::fs::create_dir_all(home).map_err(|e| {
                    SecretError::Key(format!("cannot create {}: {e}", home.display()))
                })?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| {
                        SecretError::Key(format!("cannot create {}: {e}", path.display()))
                    })?;
                f.write_all(b64().encode(key).as_bytes())
                    .map_err(|e| SecretError::Key(format!("{}: {e}", path.display())))?;
                Ok(SecretBox::from_key(key))
            }
            Err(e) => Err(SecretError::Key(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    pub fn seal(&self, plain: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = self
            .cipher
            .encrypt(&nonce, plain.as_bytes())
            .expect("AES-GCM encryption of a short text cannot fail");
        let mut out = nonce.to_vec();
        out.extend(ct);
        format!("v1:{}", b64().encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let raw = sealed
            .strip_prefix("v1:")
            .and_then(|b| b64().decode(b).ok())
            .filter(|r| r.len() > 12)
            .ok_or(SecretError::Decrypt)?;
        let (nonce, ct) = raw.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| SecretError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_refuses_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let b = SecretBox::load(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = b.seal("postgres://u:hunter22@h/db");
        assert!(!sealed.contains("hunter22"));
        assert_eq!(b.open(&sealed).unwrap(), "postgres://u:hunter22@h/db");
        // The same folder gives the same key; another key cannot open it.
        assert_eq!(
            SecretBox::load(dir.path()).unwrap().open(&sealed).unwrap(),
            "postgres://u:hunter22@h/db"
        );
        assert!(SecretBox::from_key([7; 32]).open(&sealed).is_err());
        assert!(parse_key("c2hvcnQ=", "x").is_err());
    }
}
