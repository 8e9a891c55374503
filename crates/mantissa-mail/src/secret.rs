//! Secrets the site store keeps sealed: the relay password of
//! [`MailConfig`](crate::MailConfig), encrypted with a key that is not in
//! the store, so that a copy of the store (a backup, an export, a stolen
//! disk image of the database) does not give away the relay's password.
//!
//! The key ([`SecretKey`]) comes from the environment variable
//! [`KEY_ENV`] (`MANTISSA_SECRET_KEY`, base64 of 32 bytes): what a site on
//! PostgreSQL uses, since its nodes keep no files, each given the same key.
//! Otherwise it is the file [`KEY_FILE`] (`secret.key`) in the site's
//! folder, made on first use with mode 0600 and holding the same base64
//! text, so that a site moved to PostgreSQL takes its key along by setting
//! `MANTISSA_SECRET_KEY` to the file's contents.
//!
//! A secret is sealed with XChaCha20-Poly1305 (RustCrypto's
//! `chacha20poly1305`: authenticated, so a wrong key or a changed
//! ciphertext is an error, never a garbled password sent to the relay)
//! under a random 192-bit nonce, with what the secret is for as associated
//! data (a ciphertext moved to another field does not open there either).
//! The sealed text is `sealed1:` and the base64 of nonce and ciphertext.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The environment variable that holds the key (base64 of 32 bytes).
pub const KEY_ENV: &str = "MANTISSA_SECRET_KEY";

/// The key file in the site's folder, when the environment names no key.
pub const KEY_FILE: &str = "secret.key";

/// What every sealed text begins with (the format's version).
const PREFIX: &str = "sealed1:";

const NONCE_LEN: usize = 24;

/// How to make a key, for the messages that ask for one.
const MAKE_ONE: &str = "make one with `head -c 32 /dev/urandom | base64`";

/// Why a secret could not be sealed or opened. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `MANTISSA_SECRET_KEY` is set but is not base64 of 32 bytes.
    #[error("{KEY_ENV} is not the base64 of 32 bytes ({reason}); {MAKE_ONE}")]
    BadEnvKey {
        /// What is wrong with it.
        reason: String,
    },
    /// The key file could not be read or made, or holds no key.
    #[error("the secret key file {}: {reason}; restore it, or set {KEY_ENV} to the key the site's secrets were sealed with", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// No key: the site is on PostgreSQL (its nodes keep no files) and
    /// `MANTISSA_SECRET_KEY` is not set.
    #[error(
        "{what} needs a secret key, and {KEY_ENV} is not set (a site on PostgreSQL keeps no key file: give every node the same key in {KEY_ENV}; {MAKE_ONE}, or use the contents of the site's {KEY_FILE} if it had one)"
    )]
    NoKey {
        /// What needed the key.
        what: String,
    },
    /// The sealed text does not open with this key: another key sealed it,
    /// or it was changed.
    #[error(
        "{what} in the site store does not open with the key from {key_from} (it was sealed with another key, or changed); set {KEY_ENV} to the key it was sealed with, or set it again (`mantissa mail set --user USER --password-stdin`)"
    )]
    WrongKey {
        /// What was sealed.
        what: String,
        /// Where the key came from: the variable or the file.
        key_from: String,
    },
    /// The stored text is not a sealed secret at all.
    #[error(
        "{what} in the site store is not a sealed secret ({reason}); set it again (`mantissa mail set --user USER --password-stdin`)"
    )]
    Malformed {
        /// What was sealed.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A 256-bit key that seals the site's secrets, and where it came from.
#[derive(Clone)]
pub struct SecretKey {
    key: [u8; 32],
    source: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("SecretKey")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// The key from `MANTISSA_SECRET_KEY`, or else from the key file in
    /// `folder` (made now, mode 0600, if there is none yet and `make`),
    /// or else [`SecretError::NoKey`] for `what`. `folder` is none for a
    /// site whose nodes keep no files (PostgreSQL).
    pub fn find(folder: Option<&Path>, make: bool, what: &str) -> Result<SecretKey, SecretError> {
        if let Some(text) = std::env::var_os(KEY_ENV).filter(|v| !v.is_empty()) {
            let text = text.to_str().ok_or_else(|| SecretError::BadEnvKey {
                reason: "not text".into(),
            })?;
            let key = decode_key(text).map_err(|reason| SecretError::BadEnvKey { reason })?;
            return Ok(SecretKey {
                key,
                source: KEY_ENV.into(),
            });
        }
        let Some(folder) = folder else {
            return Err(SecretError::NoKey { what: what.into() });
        };
        let path = folder.join(KEY_FILE);
        let fail = |reason: String| SecretError::KeyFile {
            path: path.clone(),
            reason,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && make => {
                make_key_file(&path).map_err(|e| fail(e.to_string()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(fail(
                    "there is none (it is made when a secret is first sealed)".into(),
                ));
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        let key =
            decode_key(&text).map_err(|reason| fail(format!("it holds no key ({reason})")))?;
        Ok(SecretKey {
            key,
            source: path.display().to_string(),
        })
    }

    /// A key of these bytes (tests, and callers with a key of their own).
    pub fn from_bytes(key: [u8; 32], source: impl Into<String>) -> SecretKey {
        SecretKey {
            key,
            source: source.into(),
        }
    }

    /// Where the key came from: `MANTISSA_SECRET_KEY` or the key file.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// `secret` sealed for `what` (the associated data: the same `what`
    /// opens it).
    pub fn seal(&self, what: &str, secret: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| SecretError::KeyFile {
            path: PathBuf::from("(the system's random numbers)"),
            reason: e.to_string(),
        })?;
        let cipher = XChaCha20Poly1305::new(&self.key.into());
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: what.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Malformed {
                what: what.into(),
                reason: "too long to seal".into(),
            })?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", B64.encode(out)))
    }

    /// The secret that `sealed` holds, sealed for `what` by [`seal`]
    /// under this key.
    ///
    /// [`seal`]: SecretKey::seal
    pub fn open(&self, what: &str, sealed: &str) -> Result<String, SecretError> {
        let malformed = |reason: &str| SecretError::Malformed {
            what: what.into(),
            reason: reason.into(),
        };
        let body = sealed
            .strip_prefix(PREFIX)
            .ok_or_else(|| malformed("it does not begin with sealed1:"))?;
        let bytes = B64
            .decode(body.trim())
            .map_err(|_| malformed("not base64"))?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(malformed("too short"));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at its length");
        let cipher = XChaCha20Poly1305::new(&self.key.into());
        let plain = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: what.as_bytes(),
                },
            )
            .map_err(|_| SecretError::WrongKey {
                what: what.into(),
                key_from: self.source.clone(),
            })?;
        String::from_utf8(plain).map_err(|_| malformed("not text once opened"))
    }
}

/// Whether `text` is a sealed secret (rather than, say, a plaintext
/// password written by an older version).
pub fn is_sealed(text: &str) -> bool {
    text.starts_with(PREFIX)
}

fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let n = bytes.len();
    bytes.try_into().map_err(|_| format!("{n} bytes, not 32"))
}

/// Makes the key file at `path`: 32 random bytes as base64, readable by
/// its owner only, written in full before anyone can read it (a file made
/// meanwhile by another process wins, and is read).
fn make_key_file(path: &Path) -> std::io::Result<String> {
    use std::io::Write;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(std::io::Error::other)?;
    let text = format!("{}\n", B64.encode(key));
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(text.as_bytes())?;
    tmp.1.sync_all()?;
    // Not rename: it would replace a key made meanwhile.
    match std::fs::hard_link(&tmp.0, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp.0);
            return std::fs::read_to_string(path);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp.0);
            return Err(e);
        }
    }
    let _ = std::fs::remove_file(&tmp.0);
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    tracing::info!(file = %path.display(), "made the site's secret key");
    Ok(text)
}

/// A new file in `dir`, mode 0600 (on Unix), and its path.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(std::io::Error::other)?;
    let path = dir.join(format!(
        ".{KEY_FILE}.{}.partial",
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    Ok((path.clone(), options.open(&path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_with_its_key_and_purpose_only() {
        let key = SecretKey::from_bytes([7; 32], "test");
        let sealed = key.seal("the relay password", "hunter2 and more").unwrap();
        assert!(is_sealed(&sealed) && !sealed.contains("hunter2"));
        assert_eq!(
            key.open("the relay password", &sealed).unwrap(),
            "hunter2 and more"
        );
        // A new nonce each time.
        assert_ne!(
            sealed,
            key.seal("the relay password", "hunter2 and more").unwrap()
        );
        let other = SecretKey::from_bytes([8; 32], "another");
        let e = other.open("the relay password", &sealed).unwrap_err();
        assert!(matches!(e, SecretError::WrongKey { .. }), "{e}");
        assert!(e.to_string().contains("MANTISSA_SECRET_KEY"), "{e}");
        assert!(matches!(
            key.open("something else", &sealed).unwrap_err(),
            SecretError::WrongKey { .. }
        ));
        // A changed byte does not open.
        let mut bytes = B64.decode(&sealed[PREFIX.len()..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let changed = format!("{PREFIX}{}", B64.encode(bytes));
        assert!(matches!(
            key.open("the relay password", &changed).unwrap_err(),
            SecretError::WrongKey { .. }
        ));
        assert!(matches!(
            key.open("the relay password", "hunter2").unwrap_err(),
            SecretError::Malformed { .. }
        ));
    }
}
