//! Static files at content-hashed URLs.
//!
//! `/static/<offering>/<hash>/<path>`: the hash is of the file's bytes, so a
//! URL's content never changes and browsers may keep it for a year
//! (`immutable`); a new version gets a new URL. A theme may replace any
//! offering's file by putting one at `<site>/themes/<theme>/static/<offering>/<path>`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// One static file.
#[derive(Clone, Debug)]
pub struct StaticFile {
    /// Its bytes.
    pub bytes: Bytes,
    /// The first 16 hex digits of its SHA-256.
    pub hash: String,
    /// Its media type.
    pub content_type: String,
}

impl StaticFile {
    fn new(path: &str, bytes: Bytes) -> StaticFile {
        let digest = Sha256::digest(&bytes);
        let hash = hex::encode(&digest[..8]);
        StaticFile {
            bytes,
            hash,
            content_type: mime_guess::from_path(path)
                .first_or_octet_stream()
                .essence_str()
                .to_string(),
        }
    }
}

type Key = (String, String);

/// The static files of every offering, with the theme's replacements.
pub struct Statics {
    builtin: HashMap<Key, StaticFile>,
    theme_dir: RwLock<Option<PathBuf>>,
    dev: bool,
    themed: RwLock<HashMap<Key, Option<StaticFile>>>,
}

fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != ".." && seg != "." && !seg.contains('\\'))
}

impl Statics {
    /// Files compiled into the binary, as (offering, path, bytes).
    pub fn new(
        builtin: &[(&str, &str, &'static [u8])],
        theme_dir: Option<PathBuf>,
        dev: bool,
    ) -> Self {
        Statics {
            builtin: builtin
                .iter()
                .map(|(o, p, b)| {
                    (
                        (o.to_string(), p.to_string()),
                        StaticFile::new(p, Bytes::from_static(b)),
                    )
                })
                .collect(),
            theme_dir: RwLock::new(theme_dir),
            dev,
            themed: RwLock::new(HashMap::new()),
        }
    }

    /// Switches theme.
    pub fn set_theme_dir(&self, dir: Option<PathBuf>) {
        *self.theme_dir.write().unwrap_or_else(|e| e.into_inner()) = dir;
        self.themed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn themed_file(&self, offering: &str, path: &str) -> Option<StaticFile> {
        let key = (offering.to_string(), path.to_string());
        if !self.dev
            && let Some(hit) = self
                .themed
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
        {
            return hit.clone();
        }
        let dir = self
            .theme_dir
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let file = dir
            .and_then(|d| std::fs::read(d.join(offering).join(path)).ok())
            .map(|b| StaticFile::new(path, Bytes::from(b)));
        if !self.dev {
            self.themed
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, file.clone());
        }
        file
    }

    /// The file, if there is one.
    pub fn get(&self, offering: &str, path: &str) -> Option<StaticFile> {
        if !valid_path(path) || !valid_path(offering) {
            return None;
        }
        self.themed_file(offering, path).or_else(|| {
            self.builtin
                .get(&(offering.to_string(), path.to_string()))
                .cloned()
        })
    }

    /// The URL of a file (a placeholder hash if there is none, so that a
    /// typo shows as a 404 rather than a template error).
    pub fn url(&self, offering: &str, path: &str) -> String {
        let hash = self
            .get(offering, path)
            .map(|f| f.hash)
            .unwrap_or_else(|| "missing".into());
        format!("/static/{offering}/{hash}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_content_hash_and_paths_cannot_escape() {
        let s = Statics::new(&[("mantissa", "a.css", b"body{}")], None, false);
        let url = s.url("mantissa", "a.css");
        assert!(
            url.starts_with("/static/mantissa/") && url.ends_with("/a.css"),
            "{url}"
        );
        assert_eq!(url.len(), "/static/mantissa/".len() + 16 + "/a.css".len());
        assert_eq!(s.get("mantissa", "a.css").unwrap().content_type, "text/css");
        assert!(s.get("mantissa", "../a.css").is_none());
        assert!(s.get("..", "a.css").is_none());
    }
}
