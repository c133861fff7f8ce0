//! Encryption at rest of the control plane's secrets (connection URIs and extras, secret
//! variables): AES-256-GCM with a key from `TERN_SECRET_KEY` (32 bytes, base64 or hex) or,
//! when unset, from `HOME/secret.key`, created with mode 0600 on first start. Sealed values read
//! `v1:<base64(nonce ‖ ciphertext)>`.
//!
//! Several keys may be given (comma-separated in the variable, one a line in the file): the
//! first seals, every one opens — how a key is rotated while servers still hold the old one
//! (`tern secrets rotate`, [`rotate`]).

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
    /// Earlier keys, tried in turn when the current one cannot open a value.
    previous: Vec<Aes256Gcm>,
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

/// The keys of `text` (separated by commas or line breaks; the first is the current one).
fn parse_keys(text: &str, source: &str) -> Result<Vec<[u8; 32]>, SecretError> {
    let keys: Vec<[u8; 32]> = text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| parse_key(k, source))
        .collect::<Result<_, _>>()?;
    if keys.is_empty() {
        return Err(SecretError::Key(format!("{source}: no key")));
    }
    Ok(keys)
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

/// A new random key, as base64 (how `secret.key` holds it).
pub fn new_key() -> String {
    let key: [u8; 32] = Aes256Gcm::generate_key(OsRng).into();
    b64().encode(key)
}

impl SecretBox {
    pub fn from_key(key: [u8; 32]) -> SecretBox {
        SecretBox {
            cipher: cipher(&key),
            previous: Vec::new(),
        }
    }

    /// Seals with the first of `keys`, opens with any.
    fn from_keys(keys: &[[u8; 32]]) -> SecretBox {
        SecretBox {
            cipher: cipher(&keys[0]),
            previous: keys[1..].iter().map(cipher).collect(),
        }
    }

    /// The keys of `text` (base64 or hex, comma- or line-separated, the current first).
    pub fn from_text(text: &str, source: &str) -> Result<SecretBox, SecretError> {
        Ok(SecretBox::from_keys(&parse_keys(text, source)?))
    }

    /// The keys from `TERN_SECRET_KEY`, else `home/secret.key` (created if missing).
    pub fn load(home: &Path) -> Result<SecretBox, SecretError> {
        if let Ok(v) = std::env::var(KEY_ENV) {
            return SecretBox::from_text(&v, KEY_ENV);
        }
        let path = home.join("secret.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => SecretBox::from_text(&text, &path.display().to_string()),
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
        let plain = std::iter::once(&self.cipher)
            .chain(&self.previous)
            .find_map(|c| c.decrypt(Nonce::from_slice(nonce), ct).ok())
            .ok_or(SecretError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| SecretError::Decrypt)
    }
}

/// What [`rotate`] did.
pub struct Rotation {
    pub resealed: tern_store::sealed::Resealed,
    /// Where the new key is: `HOME/secret.key` (the old one then in `HOME/secret.key.old`), or,
    /// when the key comes from `TERN_SECRET_KEY`, `HOME/secret.key.new` for the operator to
    /// put in the variable.
    pub key_file: std::path::PathBuf,
    pub from_env: bool,
}

/// Writes `text` to `path` with mode 0600, atomically (a temporary file renamed over it).
fn write_key_file(path: &Path, text: &str) -> Result<(), SecretError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| SecretError::Key(format!("{}: {e}", path.display()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// Re-encrypts every connection and secret variable under a new key (`given_key`, or a
/// generated one) in one transaction. With the key in `HOME/secret.key`, the file first
/// holds both keys (new first: a crash at any point leaves every value readable), then the new
/// one alone, the old moving to `secret.key.old` (for backups taken before). With the key in
/// `TERN_SECRET_KEY`, the new key is written to `HOME/secret.key.new` for the operator to set.
pub async fn rotate(
    store: &tern_store::Store,
    home: &Path,
    given_key: Option<&str>,
) -> anyhow::Result<Rotation> {
    use anyhow::Context;
    let current = SecretBox::load(home).context("the current secret key")?;
    let new_key = match given_key {
        Some(k) => {
            parse_key(k, "the new key")?;
            k.trim().to_string()
        }
        None => new_key(),
    };
    let next = SecretBox::from_text(&new_key, "the new key")?;
    let from_env = std::env::var(KEY_ENV).is_ok();
    let key_path = home.join("secret.key");
    let old_text = if from_env {
        None
    } else {
        Some(
            std::fs::read_to_string(&key_path)
                .with_context(|| format!("{}", key_path.display()))?,
        )
    };
    if let Some(old) = &old_text {
        write_key_file(&key_path, &format!("{new_key}\n{}\n", old.trim()))?;
    }
    let resealed = match store
        .reseal_all(|sealed| {
            current
                .open(sealed)
                .map(|plain| next.seal(&plain))
                .map_err(|e| e.to_string())
        })
        .await
    {
        Ok(r) => r,
        Err(e) => {
            if let Some(old) = &old_text {
                write_key_file(&key_path, old)?;
            }
            return Err(anyhow::Error::new(e)
                .context("re-encrypting the stored secrets (nothing was changed)"));
        }
    };
    let key_file = match &old_text {
        Some(old) => {
            write_key_file(&home.join("secret.key.old"), &format!("{}\n", old.trim()))?;
            write_key_file(&key_path, &format!("{new_key}\n"))?;
            key_path
        }
        None => {
            let path = home.join("secret.key.new");
            write_key_file(&path, &format!("{new_key}\n"))?;
            path
        }
    };
    Ok(Rotation {
        resealed,
        key_file,
        from_env,
    })
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

    #[test]
    fn the_first_of_several_keys_seals_and_every_one_opens() {
        let (old, new) = (new_key(), new_key());
        let by_old = SecretBox::from_text(&old, "old").unwrap().seal("pw-1");
        let both = SecretBox::from_text(&format!("{new},{old}"), "both").unwrap();
        assert_eq!(both.open(&by_old).unwrap(), "pw-1");
        let by_both = both.seal("pw-2");
        assert_eq!(
            SecretBox::from_text(&new, "new")
                .unwrap()
                .open(&by_both)
                .unwrap(),
            "pw-2"
        );
        assert!(SecretBox::from_text(&old, "old")
            .unwrap()
            .open(&by_both)
            .is_err());
        // Lines work as commas do.
        let lines = SecretBox::from_text(&format!("{new}\n{old}\n"), "file").unwrap();
        assert_eq!(lines.open(&by_old).unwrap(), "pw-1");
        assert!(SecretBox::from_text(" , ", "empty").is_err());
    }
}
