//! `mantissa dev`: builds the site crate in the current folder, serves it
//! with `serve --dev`, and builds and restarts it when its Rust sources
//! change.
//!
//! Templates need no restart (`--dev` reads them on every page), so only
//! `src/`, `Cargo.toml` and `build.rs` are watched. They are watched by
//! looking at their modification times twice a second, not with the
//! operating system's file events (the `notify` crate): a site crate is a
//! few dozen files, a look costs microseconds, and polling behaves the same
//! on every system, in containers and over network file systems, where
//! events are missed. A failed build is shown and the last good server
//! keeps running until the next change.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, SystemTime};

/// Why `mantissa dev` stopped.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// Not in a crate.
    #[error(
        "{} has no Cargo.toml: run `mantissa dev` in a site crate (make one with `mantissa new NAME`)",
        .0.display()
    )]
    NotACrate(PathBuf),
    /// cargo or the site could not be started.
    #[error("cannot run {what}: {source}")]
    Run {
        /// What.
        what: String,
        /// Why.
        source: io::Error,
    },
}

/// How often the sources are looked at.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// The newest modification time among the crate's Rust sources.
fn newest_source(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut pending = vec![dir.join("src")];
    for file in ["Cargo.toml", "build.rs"] {
        if let Ok(m) = std::fs::metadata(dir.join(file)).and_then(|m| m.modified()) {
            newest = newest.max(Some(m));
        }
    }
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(path),
                Ok(_) if path.extension().is_some_and(|e| e == "rs") => {
                    if let Ok(m) = entry.metadata().and_then(|m| m.modified()) {
                        newest = newest.max(Some(m));
                    }
                }
                _ => {}
            }
        }
    }
    newest
}

/// The binary `cargo build` makes for the crate at `dir`: its package name
/// under the target folder.
fn binary(dir: &Path) -> io::Result<PathBuf> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
    let name = manifest
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
        })
        .ok_or_else(|| io::Error::other("Cargo.toml names no package"))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    Ok(target
        .join("debug")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

fn build(dir: &Path) -> Result<bool, DevError> {
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .arg("build")
        .current_dir(dir)
        .status()
        .map_err(|source| DevError::Run {
            what: "cargo build".into(),
            source,
        })?;
    Ok(status.success())
}

fn start(dir: &Path, serve_args: &[String]) -> Result<Child, DevError> {
    let bin = binary(dir).map_err(|source| DevError::Run {
        what: "the site (reading Cargo.toml)".into(),
        source,
    })?;
    Command::new(&bin)
        .arg("serve")
        .arg("--dev")
        .args(serve_args)
        .current_dir(dir)
        .spawn()
        .map_err(|source| DevError::Run {
            what: bin.display().to_string(),
            source,
        })
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        // Stopped as `kill -9` would: every write the site acknowledged
        // has been committed already.
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Builds and serves the site crate at `dir` with `serve --dev` and
/// `serve_args` (like `--site site --listen 127.0.0.1:8080`), and again
/// whenever its sources change, until interrupted.
pub fn dev(dir: &Path, serve_args: &[String], out: &mut dyn Write) -> Result<(), DevError> {
    if !dir.join("Cargo.toml").is_file() {
        return Err(DevError::NotACrate(dir.to_path_buf()));
    }
    let mut server: Option<Child> = None;
    let mut built = None;
    loop {
        let now = newest_source(dir);
        if now != built {
            built = now;
            if built.is_some() && server.is_some() {
                let _ = writeln!(out, "mantissa dev: a source changed; building again");
            }
            if build(dir)? {
                stop(&mut server);
                server = Some(start(dir, serve_args)?);
            } else {
                let _ = writeln!(
                    out,
                    "mantissa dev: the build failed (above); {} until the next change",
                    if server.is_some() {
                        "the last good build keeps serving"
                    } else {
                        "waiting"
                    }
                );
            }
            let _ = out.flush();
        }
        if let Some(c) = server.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            let _ = writeln!(
                out,
                "mantissa dev: the site stopped ({status}); it starts again at the next change"
            );
            server = None;
        }
        std::thread::sleep(LOOK_EVERY);
    }
}
