//! The commands of the `mantissa` command line, as library functions.
//!
//! The binary (`src/main.rs`) parses arguments and calls one function here;
//! each writes what a person asked for to `out` (stdout), shows progress on
//! stderr when that is a terminal, and returns a typed [`Error`] whose
//! message says what failed and whose source says why. Nothing here prints
//! errors or exits: that is the binary's job.
//!
//! [`main_with`] is the whole command line (arguments parsed with clap):
//! the `mantissa` binary calls it with no offerings of its own, and an
//! application's binary with its offerings.
//!
//! Every command except [`init`] and [`serve`] works on an existing site,
//! opened with [`open_site`], so that a command run in the wrong folder says
//! so instead of creating an empty site there. Which site is told by
//! [`SiteDir::find`]: `--site` or `MANTISSA_SITE`, else the current folder
//! when it holds a site, else the default site folder
//! ([`default_site_dir`], in the user's data folder), so that the README's
//! first command, run in a checkout, leaves no data among the sources.
//!
//! The command lines a command suggests (`init`'s "Run it with: …") name
//! this binary as a person can run it: by name when the PATH finds it,
//! else by its path, or with `cargo run` in its source folder.

use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;

use mantissa_accounts::{
    AccountError, Accounts, SettingsOffering, SharePolicy, TokenAuthenticator,
};
use mantissa_mail::MailConfig;
use mantissa_server::{Guard, Limits, Protocol, ServerError, load_tls};
use mantissa_store::{Site, Store, StoreError, StoreStats};
use mantissa_web::{
    App, HttpProtocol, Offering, Port, PortError, SiteConfig, WebOptions, site_server,
};
use serde::Serialize;

mod args;
mod dev;
mod scaffold;
pub use args::main_with;
pub use dev::{DevError, dev};
pub use scaffold::{Piece, ScaffoldError, generate, new_site};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A port could not be added, removed or used.
    #[error(transparent)]
    Port(PortError),
    /// The server could not start (a port taken, a certificate unreadable).
    #[error(transparent)]
    Server(ServerError),
    /// An account operation failed.
    #[error(transparent)]
    Account(AccountError),
    /// A setting's value is not acceptable.
    #[error("{0}")]
    Setting(String),
    /// The web application could not start.
    #[error("the web application cannot start: {0}")]
    Web(String),

    /// No site was named and there is no default site folder.
    #[error(
        "no site folder: name one with --site DIR or MANTISSA_SITE (there is no default, as neither HOME nor XDG_DATA_HOME is set)"
    )]
    NoDefaultSite,
    /// The site could not be opened (there is none, or it is damaged).
    #[error("cannot open the Mantissa site in {}", dir.display())]
    OpenSite {
        /// The site's folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// A new site could not be created.
    #[error("cannot create a Mantissa site in {}", dir.display())]
    CreateSite {
        /// The folder asked for.
        dir: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// `store check` found problems (they were printed as found).
    #[error("{problems} problem(s) found in {unhealthy} of {checked} stores")]
    Unhealthy {
        /// Problems found.
        problems: usize,
        /// Stores with at least one problem.
        unhealthy: usize,
        /// Stores checked.
        checked: usize,
    },
    /// `store stats` could not read some stores (the rest were printed).
    #[error("{failed} of {total} stores could not be read; run `mantissa store check` for details")]
    Unreadable {
        /// Stores that could not be read.
        failed: usize,
        /// Stores in the site.
        total: usize,
    },
    /// A backup's folder exists already; nothing was written.
    #[error("cannot back up to {}: it already exists (a backup makes a new folder); nothing was written", dest.display())]
    BackupExists {
        /// The backup folder asked for.
        dest: PathBuf,
    },
    /// A backup failed; the partial copy, if any, was removed.
    #[error("backing up the site to {} failed{}", dest.display(), if *removed { "; the partial backup was removed" } else { "" })]
    Backup {
        /// The backup folder asked for.
        dest: PathBuf,
        /// Whether a partial copy was written, and removed.
        removed: bool,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Exporting a user's store failed; a partial file was removed.
    #[error("exporting user {name:?} to {} failed", file.display())]
    Export {
        /// The user.
        name: String,
        /// The file asked for.
        file: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Importing a user's store failed; no store was created.
    #[error("importing {} as user {name:?} failed; no store was created", file.display())]
    Import {
        /// The user.
        name: String,
        /// The file given.
        file: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The account for an imported store could not be made; the store was
    /// removed again.
    #[error("cannot make an account for the imported store of {name:?}; no store was created")]
    ImportAccount {
        /// The user.
        name: String,
        /// Why.
        #[source]
        source: AccountError,
    },
    /// Any other store error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The mail queue refused (no such message, delivered already).
    #[error(transparent)]
    Mail(#[from] mantissa_mail::MailError),
    /// Writing to stdout failed.
    #[error("cannot write the output")]
    Output(#[from] io::Error),
    /// `serve` could not listen for Ctrl-C or SIGTERM.
    #[error("cannot wait for a stop signal")]
    Signal(#[source] io::Error),
    /// `mail bounce`: the file could not be read.
    #[error("cannot read {}", file.display())]
    ReadMessage {
        /// The file named.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `mail bounce`: the file is not a mail message.
    #[error("{} is not a mail message", file.display())]
    NotMail {
        /// The file named.
        file: PathBuf,
        /// What is wrong with it.
        #[source]
        source: mantissa_mail_proto::Error,
    },
}

/// The site store's file, in a site's folder.
pub const SITE_FILE: &str = "site.sqlite";

/// Where a command's site is, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteDir {
    /// The site's folder.
    pub dir: PathBuf,
    /// How it was chosen.
    pub chosen: Chosen,
}

/// How a command's site folder was chosen (see [`SiteDir::find`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// By `--site DIR` or `MANTISSA_SITE`.
    Given,
    /// The current folder, which holds a site.
    CurrentFolder,
    /// The default site folder of the user running the command
    /// ([`default_site_dir`]).
    Default,
}

impl SiteDir {
    /// The site a command works on: the folder `given` by `--site` or
    /// `MANTISSA_SITE`; else the current folder if it holds a site (so that
    /// `mantissa store check` works inside a site's folder); else the
    /// default site folder, which is outside any source tree (a first
    /// `mantissa serve` in a checkout leaves no data among its sources).
    pub fn find(given: Option<PathBuf>) -> Result<SiteDir, Error> {
        if let Some(dir) = given {
            return Ok(SiteDir {
                dir,
                chosen: Chosen::Given,
            });
        }
        if Path::new(SITE_FILE).is_file() {
            return Ok(SiteDir {
                dir: PathBuf::from("."),
                chosen: Chosen::CurrentFolder,
            });
        }
        Ok(SiteDir {
            dir: default_site_dir().ok_or(Error::NoDefaultSite)?,
            chosen: Chosen::Default,
        })
    }

    /// `--site DIR ` for a command line that names this site to a later
    /// command run anywhere; empty for the default site, which needs none.
    fn flag(&self) -> String {
        match self.chosen {
            Chosen::Default => String::new(),
            _ => format!(
                "--site {} ",
                shell_word(&shown(&self.dir).display().to_string())
            ),
        }
    }
}

/// The default site folder: `mantissa/site` in the user's data folder —
/// `$XDG_DATA_HOME` (when set to an absolute path) or `~/.local/share` on
/// Linux and other Unixes, `~/Library/Application Support` on macOS,
/// `%LOCALAPPDATA%` on Windows. `None` when the environment names no home.
pub fn default_site_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let data = if cfg!(windows) {
        var("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        var("HOME").map(|h| h.join("Library/Application Support"))
    } else {
        var("XDG_DATA_HOME").or_else(|| var("HOME").map(|h| h.join(".local/share")))
    };
    Some(data?.join("mantissa").join("site"))
}

/// `text` as one word of a shell command line: quoted when it needs to be.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Opens the existing site in `dir`; an error, changing nothing, if there
/// is none.
pub fn open_site(dir: &Path) -> Result<Site, Error> {
    open_site_at(dir, None)
}

/// [`open_site`], with the site's stores in the PostgreSQL database at
/// `store` when one is given (`--store`), which is made ready if it is
/// new: the folder then holds what stays on this machine.
pub fn open_site_at(dir: &Path, store: Option<&str>) -> Result<Site, Error> {
    // Opened by its absolute path, so that every error names it in full.
    let dir = shown(dir);
    match store {
        Some(url) => Site::open_postgres(&dir, url),
        None => Site::open_existing(&dir),
    }
    .map_err(|source| Error::OpenSite { dir, source })
}

/// `mantissa init [DIR]`: creates a site in `site`, or says that there is
/// one already and leaves it as it is; then says how to run it.
pub fn init(site: &SiteDir, out: &mut dyn Write) -> Result<(), Error> {
    let shown = shown(&site.dir);
    let dir = &shown;
    let default = if site.chosen == Chosen::Default {
        " (the default site folder)"
    } else {
        ""
    };
    if dir.join(SITE_FILE).is_file() {
        writeln!(
            out,
            "A Mantissa site already exists in {}{default}; left unchanged.",
            shown.display()
        )?;
        return Ok(());
    }
    Site::open(dir).map_err(|source| Error::CreateSite {
        dir: shown.clone(),
        source,
    })?;
    writeln!(
        out,
        "Created a Mantissa site in {}{default}",
        shown.display()
    )?;
    let how = Invocation::find();
    writeln!(
        out,
        "Run it with: {}",
        how.line(&format!("{}serve", site.flag()))
    )?;
    for line in how.alternatives(&format!("{}serve", site.flag())) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// How a person runs this binary again, for the commands a command
/// suggests: by its name when the PATH finds this very binary under it,
/// else by its path (and, when cargo built it, with `cargo run`).
#[derive(Debug, Clone)]
enum Invocation {
    /// On the PATH as this name.
    OnPath(String),
    /// Not on the PATH (or another binary is, under its name).
    NotOnPath {
        /// The binary's name.
        name: String,
        /// The binary itself.
        exe: PathBuf,
        /// Whether it lies in a cargo target folder (`…/target/release/`).
        built_by_cargo: bool,
    },
}

impl Invocation {
    fn find() -> Invocation {
        let exe = std::env::current_exe().ok();
        let name = exe.as_deref().and_then(Path::file_stem).map_or_else(
            || "mantissa".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let Some(exe) = exe else {
            return Invocation::OnPath(name);
        };
        let real = std::fs::canonicalize(&exe).unwrap_or_else(|_| exe.clone());
        let file = exe.file_name().map(PathBuf::from).unwrap_or_default();
        let on_path = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(&file))
                .find(|c| c.is_file())
                .and_then(|c| std::fs::canonicalize(c).ok())
                .is_some_and(|c| c == real)
        });
        if on_path {
            return Invocation::OnPath(name);
        }
        let built_by_cargo =
            real.parent().is_some_and(|profile| {
                profile.ancestors().skip(1).take(2).any(|d| {
                    d.join(".rustc_info.json").is_file() || d.join("CACHEDIR.TAG").is_file()
                })
            });
        Invocation::NotOnPath {
            name,
            exe: real,
            built_by_cargo,
        }
    }

    /// The command line for `args`.
    fn line(&self, args: &str) -> String {
        match self {
            Invocation::OnPath(name) => format!("{name} {args}"),
            Invocation::NotOnPath { exe, .. } => {
                format!("{} {args}", shell_word(&exe.display().to_string()))
            }
        }
    }

    /// Other ways to run `args`, and why the name alone does not work.
    fn alternatives(&self, args: &str) -> Vec<String> {
        match self {
            Invocation::OnPath(_) => Vec::new(),
            Invocation::NotOnPath {
                name,
                built_by_cargo,
                ..
            } => {
                let mut lines = Vec::new();
                if *built_by_cargo {
                    let package = if name == "mantissa" {
                        "-p mantissa".to_string()
                    } else {
                        format!("--bin {name}")
                    };
                    lines.push(format!(
                        "or, in its source folder: cargo run --release {package} -- {args}"
                    ));
                }
                lines.push(format!(
                    "(`{name}` alone is not on your PATH{})",
                    if name == "mantissa" {
                        "; `cargo install --path crates/mantissa` in Mantissa's source folder puts it there"
                    } else {
                        ""
                    }
                ));
                lines
            }
        }
    }
}

/// Visits the site store, then every user store in name order, handing each
/// one (or the error that kept it from opening) to `f`.
fn each_store(
    site: &Site,
    mut f: impl FnMut(&str, PathBuf, Result<Store, StoreError>) -> Result<(), Error>,
) -> Result<usize, Error> {
    let names = site.user_names()?;
    f(
        "site",
        site.store().path().to_path_buf(),
        Ok(site.store().clone()),
    )?;
    for name in &names {
        let path = site.user_store_path(name)?;
        match site.existing_user_store(name) {
            Ok(Some(store)) => f(name, path, Ok(store))?,
            // Deleted while we looked: nothing to report.
            Ok(None) => {}
            Err(e) => f(name, path, Err(e))?,
        }
    }
    Ok(names.len() + 1)
}

fn store_names(site: &Site) -> Result<usize, Error> {
    Ok(site.user_names()?.len() + 1)
}

/// One store in `mantissa store stats --json`.
#[derive(Debug, Serialize)]
pub struct StatsRow {
    /// "site", or the user's name.
    pub name: String,
    /// The store's file.
    pub path: PathBuf,
    /// Bytes the store takes ([`mantissa_store::StoreStats::bytes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Items per type, for types with at least one item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<serde_json::Map<String, serde_json::Value>>,
    /// Attached files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesRow>,
    /// Scheduled entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<u64>,
    /// Background upgrades still running.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upgrading: Vec<UpgradeRow>,
    /// Why the store could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Attached files of one store.
#[derive(Debug, Serialize)]
pub struct FilesRow {
    /// How many.
    pub count: u64,
    /// Their total size.
    pub bytes: u64,
}

/// A background upgrade in progress.
#[derive(Debug, Serialize)]
pub struct UpgradeRow {
    /// The item type.
    pub item: String,
    /// Items upgraded so far.
    pub done: u64,
    /// Items to upgrade.
    pub total: u64,
    /// Why it stopped, if it failed.
    pub failed: Option<String>,
}

impl StatsRow {
    fn new(name: &str, path: PathBuf, stats: Result<StoreStats, StoreError>) -> StatsRow {
        match stats {
            Ok(s) => StatsRow {
                name: name.to_string(),
                path,
                bytes: Some(s.bytes),
                items: Some(
                    s.items
                        .into_iter()
                        .map(|(t, n)| (t, serde_json::Value::from(n)))
                        .collect(),
                ),
                files: Some(FilesRow {
                    count: s.files.0,
                    bytes: s.files.1,
                }),
                scheduled: Some(s.scheduled),
                upgrading: s
                    .upgrading
                    .into_iter()
                    .map(|p| UpgradeRow {
                        item: p.item,
                        done: p.done,
                        total: p.total,
                        failed: p.failed,
                    })
                    .collect(),
                error: None,
            },
            Err(e) => StatsRow {
                name: name.to_string(),
                path,
                bytes: None,
                items: None,
                files: None,
                scheduled: None,
                upgrading: Vec::new(),
                error: Some(e.to_string()),
            },
        }
    }
}

/// `mantissa store stats`: what every store of the site holds, as a table,
/// or as JSON (`{"site": DIR, "stores": [...]}`) if `json`.
pub fn store_stats(site: &Site, json: bool, out: &mut dyn Write) -> Result<(), Error> {
    let mut rows = Vec::new();
    each_store(site, |name, path, store| {
        rows.push(StatsRow::new(name, path, store.and_then(|s| s.stats())));
        Ok(())
    })?;
    let failed = rows.iter().filter(|r| r.error.is_some()).count();
    if json {
        #[derive(Serialize)]
        struct Doc<'a> {
            site: PathBuf,
            stores: &'a [StatsRow],
        }
        let doc = Doc {
            site: shown(site.root()),
            stores: &rows,
        };
        serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        // On PostgreSQL the stores' rows share the server's files.
        let place = if site.on_postgres() {
            "in the database"
        } else {
            "on disk"
        };
        write_stats_table(&rows, place, out)?;
    }
    if failed > 0 {
        return Err(Error::Unreadable {
            failed,
            total: rows.len(),
        });
    }
    Ok(())
}

fn write_stats_table(rows: &[StatsRow], place: &str, out: &mut dyn Write) -> io::Result<()> {
    let mut table = vec![[
        "store".to_string(),
        "size".into(),
        "files".into(),
        "scheduled".into(),
        "items".into(),
    ]];
    let mut total = 0;
    for r in rows {
        let Some(bytes) = r.bytes else {
            let error = r.error.as_deref().unwrap_or("unknown error");
            table.push([
                r.name.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("cannot be read: {error}"),
            ]);
            continue;
        };
        total += bytes;
        let files = match &r.files {
            Some(f) if f.count > 0 => format!("{} ({})", f.count, human_bytes(f.bytes)),
            _ => "0".into(),
        };
        let mut items: Vec<String> = r
            .items
            .iter()
            .flatten()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        items.extend(r.upgrading.iter().map(|u| match &u.failed {
            None => format!("{} upgrading {}/{}", u.item, u.done, u.total),
            Some(why) => format!("{} upgrade failed: {why}", u.item),
        }));
        table.push([
            r.name.clone(),
            human_bytes(bytes),
            files,
            r.scheduled.unwrap_or(0).to_string(),
            if items.is_empty() {
                "-".into()
            } else {
                items.join(", ")
            },
        ]);
    }
    let mut widths = [0; 4];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &table {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        line.push_str(&row[4]);
        writeln!(out, "{}", line.trim_end())?;
    }
    writeln!(
        out,
        "{} store{}, {} {place}",
        rows.len(),
        plural(rows.len() as u64),
        human_bytes(total)
    )
}

/// `mantissa migrate`: copies the site in `dir` from its SQLite files into
/// the PostgreSQL database `to`, or from the database `from` into SQLite
/// files in `dir`, with a progress bar, checking each store's copy.
pub fn migrate(
    dir: &Path,
    to: Option<&str>,
    from: Option<&str>,
    replace: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let shown_dir = shown(dir);
    let (source, target, into) = match (to, from) {
        (Some(url), None) => (
            open_site(&shown_dir)?,
            open_site_at(&shown_dir, Some(url))?,
            "into the PostgreSQL database",
        ),
        (None, Some(url)) => (
            open_site_at(&shown_dir, Some(url))?,
            Site::open(&shown_dir).map_err(|source| Error::CreateSite {
                dir: shown_dir.clone(),
                source,
            })?,
            "out of the PostgreSQL database, into SQLite files",
        ),
        _ => unreachable!("clap asks for exactly one of --to and --from"),
    };
    let bar = progress_bar(store_names(&source)? as u64, "migrating");
    let report = source.copy_to(&target, replace, |done, total, name| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    });
    bar.finish_and_clear();
    let report = report.map_err(|e| match e {
        StoreError::TargetNotEmpty { .. } => Error::Setting(format!(
            "{e}. Stores copied before it are in place. To replace the target's stores with this site's, run the same command with --replace"
        )),
        e => e.into(),
    })?;
    writeln!(
        out,
        "Moved the site in {} {into}: {} stores copied{}, {} rows, {} attached files.",
        shown_dir.display(),
        report.copied,
        match report.already_there {
            0 => String::new(),
            n => format!(" ({n} more were there from an earlier run)"),
        },
        report.rows,
        report.files
    )?;
    writeln!(
        out,
        "Every store was checked against the original: the same rows and files."
    )?;
    match to {
        Some(_) => writeln!(
            out,
            "Serve it from the database with: mantissa --site {} --store URL serve",
            shell_word(&shown_dir.to_string_lossy())
        )?,
        None => writeln!(
            out,
            "Serve it from its files with: mantissa --site {} serve",
            shell_word(&shown_dir.to_string_lossy())
        )?,
    }
    Ok(())
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(len: u64, what: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {wide_msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// `mantissa store check`: runs every store's integrity check, printing each
/// problem (naming the store and its file) as it is found.
pub fn store_check(site: &Site, out: &mut dyn Write) -> Result<(), Error> {
    let bar = progress_bar(store_names(site)? as u64, "checking");
    let (mut problems, mut unhealthy) = (0, 0);
    let checked = each_store(site, |name, path, store| {
        bar.set_message(name.to_string());
        let found: Vec<String> = match store.and_then(|s| s.check()) {
            Ok(found) => found
                .into_iter()
                .map(|p| format!("{name} ({}): {p}", path.display()))
                .collect(),
            // The error names the file already.
            Err(e) => vec![format!("{name}: {e}")],
        };
        bar.suspend(|| -> io::Result<()> {
            for line in &found {
                writeln!(out, "{line}")?;
            }
            out.flush()
        })?;
        if !found.is_empty() {
            problems += found.len();
            unhealthy += 1;
        }
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();
    if problems > 0 {
        return Err(Error::Unhealthy {
            problems,
            unhealthy,
            checked,
        });
    }
    writeln!(
        out,
        "{checked} store{} checked, all healthy",
        plural(checked as u64)
    )?;
    Ok(())
}

/// `mantissa backup DEST`: a consistent copy of every store and its files in
/// the new folder `dest`, taken while the site may be running.
pub fn backup(site: &Site, dest: &Path, out: &mut dyn Write) -> Result<(), Error> {
    let shown_dest = shown(dest);
    let dest = shown_dest.as_path();
    if dest.symlink_metadata().is_ok() {
        return Err(Error::BackupExists {
            dest: shown_dest.clone(),
        });
    }
    let bar = progress_bar(store_names(site)? as u64, "backing up");
    let result = site.backup(dest, |done, total, name| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    });
    bar.finish_and_clear();
    if let Err(source) = result {
        // The folder did not exist before: whatever is there now is the
        // failed backup's.
        // (Unless it appeared meanwhile, and the backup refused it.)
        let refused = matches!(&source, StoreError::Io { path, .. } if path == dest);
        let removed = !refused && dest.exists() && std::fs::remove_dir_all(dest).is_ok();
        return Err(Error::Backup {
            dest: shown_dest.clone(),
            removed,
            source,
        });
    }
    let stores = store_names(site)?;
    writeln!(
        out,
        "Backed up {stores} store{} ({}) from {} to {}",
        plural(stores as u64),
        human_bytes(dir_size(dest)),
        shown(site.root()).display(),
        shown_dest.display()
    )?;
    writeln!(
        out,
        "Check the copy with: {}",
        Invocation::find().line(&format!(
            "--site {} store check",
            shell_word(&shown_dest.display().to_string())
        ))
    )?;
    Ok(())
}

/// "3 items, 1 file": what a store holds, in words.
fn contents(store: &Store) -> Result<String, StoreError> {
    let s = store.stats()?;
    let items: u64 = s.items.iter().map(|(_, n)| n).sum();
    Ok(format!(
        "{items} item{}, {} file{}",
        plural(items),
        s.files.0,
        plural(s.files.0)
    ))
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `mantissa user export NAME FILE`: writes one user's store, attached files
/// included, to the single new file `file`.
pub fn user_export(site: &Site, name: &str, file: &Path, out: &mut dyn Write) -> Result<(), Error> {
    let file = &shown(file);
    let existed = file.exists();
    let fail = |source| Error::Export {
        name: name.to_string(),
        file: file.clone(),
        source,
    };
    let summary = match site.existing_user_store(name) {
        Ok(Some(store)) => contents(&store).map_err(fail)?,
        // export_user says that there is no such user.
        Ok(None) => String::new(),
        Err(e) => return Err(fail(e)),
    };
    if let Err(e) = site.export_user(name, file) {
        if !existed {
            let _ = std::fs::remove_file(file);
        }
        return Err(fail(e));
    }
    writeln!(
        out,
        "Exported user {name} ({summary}) to {} ({})",
        file.display(),
        human_bytes(std::fs::metadata(file).map(|m| m.len()).unwrap_or(0))
    )?;
    Ok(())
}

/// `mantissa user import NAME FILE`: creates user `name`'s store from a file
/// written by `user export`, and an account for it (with `email`, without a
/// password: a one-time link for setting one is printed) unless there is
/// one; refuses, creating nothing, if the user has a store already, the file
/// is not an export, or the account cannot be made.
pub fn user_import(
    site: &Site,
    name: &str,
    file: &Path,
    email: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let file = &shown(file);
    let fail = |source| Error::Import {
        name: name.to_string(),
        file: file.clone(),
        source,
    };
    let accounts = offline_accounts(site)?;
    let has_account = accounts.has_account(name).map_err(Error::Account)?;
    if has_account && email.is_some() {
        return Err(Error::Setting(format!(
            "{name} has an account already: --email is for a new one (change addresses at /private/settings)"
        )));
    }
    let store = site.import_user(name, file).map_err(fail)?;
    let summary = contents(&store)?;
    drop(store);
    let link = if has_account {
        None
    } else {
        match accounts.create_account_for_store(name, email) {
            Ok(link) => Some(link),
            Err(e) => {
                // Nothing is left half made: the store goes again.
                if let Err(undo) = site.delete_user_store(name) {
                    tracing::error!(user = %name, error = %undo, "removing the imported store failed");
                }
                return Err(Error::ImportAccount {
                    name: name.to_string(),
                    source: e,
                });
            }
        }
    };
    writeln!(
        out,
        "Imported {} as user {name} ({summary})",
        file.display(),
    )?;
    match link {
        Some(link) => writeln!(
            out,
            "Created the account {name}; set its password (the link works once, for 24 hours): {link}"
        )?,
        None => writeln!(out, "The store belongs to the existing account {name}.")?,
    }
    Ok(())
}

/// How `mantissa serve` runs.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Listen here instead of the site's configured ports.
    pub listen: Option<SocketAddr>,
    /// Development mode: templates and theme files reload on every request.
    pub dev: bool,
    /// The address people reach the site at (like `https://example.org`),
    /// for links in mail and for passkeys; without it, the first address
    /// served.
    pub url: Option<String>,
    /// The PostgreSQL database the site's stores are in (`--store`), for
    /// a node of a site served by several; without it, SQLite files in
    /// the site's folder.
    pub store: Option<String>,
}

/// The protocols this binary serves on ports: the web, SMTP to receive
/// mail, and submission for the site's people to send it
/// (`mantissa_mail::inbound`).
pub const PROTOCOLS: &[&str] = &["http", "https", "smtp", "submission"];

/// The address `serve` uses when the site has no ports.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The SMTP server of the site for one port: mail for its accounts at the
/// domain of its sender address, greeting as the host of its URL; with
/// STARTTLS when the port has a certificate; on a submission port, taking
/// mail from the site's people to send (`receiving::SiteSubmission`).
fn smtp_protocol(
    site: &Site,
    mail: Option<&MailConfig>,
    url: Option<&str>,
    port: &Port,
    submission: &Arc<crate::receiving::SiteSubmission>,
) -> Result<mantissa_mail::inbound::SmtpProtocol, Error> {
    let domain = mail_domain(mail);
    let hostname = url
        .and_then(|u| u.split("://").nth(1))
        .and_then(|rest| rest.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
        .unwrap_or(&domain)
        .to_string();
    let mut protocol = mantissa_mail::inbound::SmtpProtocol::new(
        site.clone(),
        hostname,
        mantissa_mail::inbound::SmtpLimits::default(),
        Arc::new(crate::receiving::SiteRecipients::new(site.clone(), &domain)),
    );
    if let (true, Some(c), Some(k)) = (port.starttls(), &port.cert, &port.key) {
        protocol = protocol.with_starttls(load_tls(c.as_ref(), k.as_ref()).map_err(Error::Server)?);
    }
    if port.protocol == "submission" {
        protocol = protocol.submission(submission.clone());
    }
    // For a site behind a mail server that checks senders already, or a
    // machine without DNS.
    if std::env::var(SMTP_CHECKS_ENV).is_ok_and(|v| v == "off") {
        protocol = protocol.without_sender_checks();
    }
    Ok(protocol)
}

/// `MANTISSA_SMTP_CHECKS=off`: received mail is not checked (SPF, DKIM,
/// DMARC: DNS lookups for each message).
pub const SMTP_CHECKS_ENV: &str = "MANTISSA_SMTP_CHECKS";

/// The domain the site receives mail at: its sender address's.
fn mail_domain(mail: Option<&MailConfig>) -> String {
    mail.and_then(|c| mantissa_mail::dkim::sender_domain(&c.from))
        .unwrap_or_else(|| "localhost".into())
}

/// Opens (creating) the site and serves it on its ports — or `--listen`, or
/// 127.0.0.1:8080 when it has none — until Ctrl-C or SIGTERM, then shuts down
/// gracefully: no new connections, requests in flight finish.
pub fn serve(site: &SiteDir, options: ServeOptions, out: &mut dyn Write) -> Result<(), Error> {
    serve_with(site, options, &[], out)
}

/// [`serve`], with `offerings` served next to Mantissa's own, exactly like
/// them: pages under `/private/<name>`, templates, static files, shared
/// items, installed in new accounts' stores as the site's products say, and
/// listed in the admin console.
pub fn serve_with(
    site_dir: &SiteDir,
    options: ServeOptions,
    offerings: &[Arc<dyn Offering>],
    out: &mut dyn Write,
) -> Result<(), Error> {
    let dir = shown(&site_dir.dir);
    let site = match &options.store {
        Some(url) => Site::open_postgres(&dir, url),
        None => Site::open(&dir),
    }
    .map_err(|source| Error::CreateSite { dir, source })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Signal)?;
    // Everything that blocks on the store happens before the runtime runs.
    let ports = match options.listen {
        Some(addr) => vec![Port {
            protocol: "http".into(),
            address: addr.to_string(),
            cert: None,
            key: None,
        }],
        None => {
            let ports = Port::list(&site)?;
            if ports.is_empty() {
                vec![Port {
                    protocol: "http".into(),
                    address: DEFAULT_LISTEN.into(),
                    cert: None,
                    key: None,
                }]
            } else {
                ports
            }
        }
    };
    let mut limits = Limits::default();
    limits.fit_to_open_files();
    let guard = Guard::new(limits);
    let mail_config = MailConfig::load(&site)?;
    // With a relay, every mail goes through the site's persistent queue,
    // which the runner started below delivers.
    let mail_queue = MailConfig::queue(mail_config.as_ref(), &site, options.dev)?;
    let mailer: Arc<dyn mantissa_mail::Mailer> = match &mail_queue {
        Some(q) => Arc::new(q.clone()),
        None => MailConfig::mailer(mail_config.as_ref(), &site, options.dev)?,
    };
    let from = mail_config
        .as_ref()
        .map(|c| c.from.clone())
        .unwrap_or_else(|| "mantissa@localhost".into());
    let accounts = Arc::new(Accounts::new(
        site.clone(),
        mailer,
        from,
        "http://127.0.0.1:8080",
    ));
    let (app, router) = site_app(&site, &accounts, &guard, offerings, options.dev)?;
    // Every template compiled now, not when a page first needs it (the
    // site serves anyway: the other pages work, and in development the
    // next save fixes it).
    for e in app.templates().check_all() {
        tracing::error!(template = %e.name, line = e.line, cause = %e.cause, "template error");
        writeln!(out, "Template error: {e}")?;
    }
    let served = runtime.block_on(async {
        // Listen for the signals before saying that we run, so that a stop
        // sent as soon as we have said it is never missed.
        let stop = StopSignal::listen().map_err(Error::Signal)?;
        let http: Arc<dyn Protocol> = Arc::new(HttpProtocol::new(router));
        let submission = Arc::new(crate::receiving::SiteSubmission::new(
            accounts.clone(),
            mail_queue.clone(),
            &mail_domain(mail_config.as_ref()),
        ));
        let mut server = site_server(guard);
        let mut urls = Vec::new();
        let mut others = Vec::new();
        for port in &ports {
            let addr = port.validate(PROTOCOLS).map_err(Error::Port)?;
            let tls = match (&port.cert, &port.key) {
                (Some(c), Some(k)) if port.is_tls() => {
                    Some(load_tls(c.as_ref(), k.as_ref()).map_err(Error::Server)?)
                }
                _ => None,
            };
            let protocol: Arc<dyn Protocol> = match port.protocol.as_str() {
                "smtp" | "submission" => Arc::new(smtp_protocol(
                    &site,
                    mail_config.as_ref(),
                    options.url.as_deref(),
                    port,
                    &submission,
                )?),
                _ => http.clone(),
            };
            let bound = server
                .listen(addr, tls, protocol)
                .await
                .map_err(Error::Server)?;
            match port.protocol.as_str() {
                p @ ("smtp" | "submission") => others.push(format!("{p}://{bound}")),
                _ => {
                    let scheme = if port.is_tls() { "https" } else { "http" };
                    urls.push(format!("{scheme}://{bound}/"));
                }
            }
        }
        if let Some(url) = options.url.as_ref().or(urls.first()) {
            accounts.set_base_url(url);
        }
        let acc = accounts.clone();
        // The accounts' purge (sessions, links, challenges) is scheduled
        // once; the background loop below runs it.
        let admin_link = tokio::task::spawn_blocking(move || {
            acc.schedule_upkeep()?;
            acc.admin_setup()
        })
        .await
        .map_err(|e| Error::Web(e.to_string()))?
        .map_err(Error::Account)?;
        let background = site.spawn_background(std::time::Duration::from_secs(1));
        let mail_runner = mail_queue
            .as_ref()
            .map(|q| q.spawn(std::time::Duration::from_secs(5)));
        writeln!(
            out,
            "Mantissa site \"{}\" ({}){}",
            app.config().name,
            shown(site.root()).display(),
            if options.dev {
                " in development mode"
            } else {
                ""
            }
        )?;
        if site_dir.chosen == Chosen::Default {
            writeln!(
                out,
                "(the default site folder; --site DIR or MANTISSA_SITE chooses another)"
            )?;
        }
        for url in &urls {
            writeln!(out, "Serving {url}")?;
        }
        for url in &others {
            writeln!(out, "Mail on {url}")?;
        }
        if let Some(url) = &options.url {
            writeln!(out, "Reached at {url} (links in mail, passkeys)")?;
        }
        if let Some(setup) = admin_link {
            writeln!(out, "Set the administrator's password (once): {}", setup.link)?;
            let base = accounts.base_url();
            writeln!(
                out,
                "The administrator's user name is {:?}: then log in at {base}/login, and manage the site at {base}/admin.",
                setup.username
            )?;
        }
        writeln!(out, "Press Ctrl-C to stop.")?;
        out.flush()?;
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            let r = stop.wait().await;
            let _ = stopped_tx.send(());
            r
        });
        server
            .run(async {
                let _ = stopped_rx.await;
            })
            .await;
        background.stop().await;
        if let Some(runner) = mail_runner {
            runner.stop().await;
        }
        waiter
            .await
            .map_err(|e| Error::Signal(io::Error::other(e)))?
            .map_err(Error::Signal)
    });
    // Every store folds its write-ahead log back into its file, so that
    // the site's files alone hold all of it once we have stopped (and
    // also when serving failed).
    let closed = site.close();
    if let Err(e) = &closed {
        tracing::error!(error = %e, "closing the site's stores failed");
    }
    served?;
    tracing::info!("stopped");
    if closed.is_ok() {
        writeln!(
            out,
            "Stopped. The site's files in {} are complete, and may be copied.",
            shown(site.root()).display()
        )?;
    } else {
        writeln!(out, "Stopped.")?;
    }
    Ok(())
}

/// The web application `serve` runs: Mantissa's pages, the accounts'
/// pages and `offerings`, with the accounts' access policy and API tokens.
/// (`testing::TestSite` serves the same.)
pub fn site_app(
    site: &Site,
    accounts: &Arc<Accounts>,
    guard: &Guard,
    offerings: &[Arc<dyn Offering>],
    dev: bool,
) -> Result<(App, mantissa_web::WebService), Error> {
    let app = App::new(
        site.clone(),
        guard.clone(),
        WebOptions {
            dev,
            offerings: linked_offerings(accounts, offerings),
            access: Some(Arc::new(SharePolicy::new(site.clone()))),
            tokens: Some(Arc::new(TokenAuthenticator::new(site.clone()))),
            templates: Vec::new(),
        },
    )
    .map_err(|e| Error::Web(e.to_string()))?;
    accounts.set_offerings(app.offerings());
    let router = app.router_with(mantissa_accounts::routes(&app, accounts.clone()));
    Ok((app, router))
}

/// Mantissa's own offerings (the account settings), then `extra`.
fn linked_offerings(
    accounts: &Arc<Accounts>,
    extra: &[Arc<dyn Offering>],
) -> Vec<Arc<dyn Offering>> {
    let mut all: Vec<Arc<dyn Offering>> = vec![Arc::new(SettingsOffering::new(accounts.clone()))];
    all.extend(extra.iter().cloned());
    all
}

fn offline_accounts(site: &Site) -> Result<Accounts, Error> {
    let mail = MailConfig::load(site)?;
    let mailer = match (MailConfig::mailer(mail.as_ref(), site, false), &mail) {
        (Ok(mailer), _) => mailer,
        // The relay password does not open (no key, or another one): the
        // mail is queued all the same, for a server given the right key to
        // send; `act` says why it is not sent now. Without the user name
        // the queue needs no password: it only queues here.
        (Err(_), Some(config)) => {
            let queue_only = MailConfig {
                username: None,
                ..config.clone()
            };
            MailConfig::mailer(Some(&queue_only), site, false)?
        }
        (Err(e), None) => return Err(e.into()),
    };
    let from = mail
        .map(|c| c.from)
        .unwrap_or_else(|| "mantissa@localhost".into());
    let url = std::env::var("MANTISSA_URL").unwrap_or_else(|_| format!("http://{DEFAULT_LISTEN}"));
    Ok(Accounts::new(site.clone(), mailer, from, url))
}

/// `mantissa user add`: creates an active account (and its store). Without
/// a password, prints a one-time link for setting one.
pub fn user_add(
    site: &Site,
    name: &str,
    email: Option<&str>,
    password: Option<&str>,
    admin: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    user_add_with(site, &[], name, email, password, admin, out)
}

/// [`user_add`] on a site that also serves `offerings` (see [`serve_with`]):
/// the new account gets those of them its product names installed.
pub fn user_add_with(
    site: &Site,
    offerings: &[Arc<dyn Offering>],
    name: &str,
    email: Option<&str>,
    password: Option<&str>,
    admin: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let accounts = Arc::new(offline_accounts(site)?);
    accounts.set_offerings(linked_offerings(&accounts, offerings));
    let link = accounts
        .create_user(name, email, password, admin)
        .map_err(Error::Account)?;
    writeln!(
        out,
        "Created user {name}{}.",
        if admin { " (administrator)" } else { "" }
    )?;
    if let Some(link) = link {
        writeln!(
            out,
            "Set the password (the link works once, for 24 hours): {link}"
        )?;
    }
    Ok(())
}

/// Refuses, naming it, a user that has neither an account nor a store.
pub fn user_exists(site: &Site, name: &str) -> Result<(), Error> {
    if offline_accounts(site)?
        .has_account(name)
        .map_err(Error::Account)?
        || site.has_user_store(name)?
    {
        return Ok(());
    }
    Err(Error::Account(AccountError::Invalid(format!(
        "there is no user called {name:?}"
    ))))
}

/// A timestamp as people read it: `2026-12-07 03:20 UTC`.
fn when(t: mantissa_store::Timestamp) -> String {
    let text = t.to_string();
    match (text.get(..10), text.get(11..16)) {
        (Some(day), Some(time)) => format!("{day} {time} UTC"),
        _ => text,
    }
}

/// `mantissa user list`: every account, by name, as a table or as JSON
/// (`{"users": [...], "stores_without_account": [...]}`); user stores
/// without an account (imported before imports made one) are listed too.
pub fn user_list(site: &Site, json: bool, out: &mut dyn Write) -> Result<(), Error> {
    let users = offline_accounts(site)?.users().map_err(Error::Account)?;
    let orphans: Vec<String> = site
        .user_names()?
        .into_iter()
        .filter(|n| !users.iter().any(|u| &u.username == n))
        .collect();
    if json {
        let doc = serde_json::json!({ "users": users, "stores_without_account": orphans });
        serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    let mut table = vec![[
        "user".to_string(),
        "status".into(),
        "role".into(),
        "created".into(),
        "email".into(),
    ]];
    for u in &users {
        let emails: Vec<String> = u
            .emails
            .iter()
            .map(|e| {
                if e.verified {
                    e.address.clone()
                } else {
                    format!("{} (unverified)", e.address)
                }
            })
            .collect();
        table.push([
            u.username.clone(),
            u.status.clone(),
            if u.admin { "administrator" } else { "user" }.into(),
            when(u.created).get(..10).unwrap_or_default().to_string(),
            if emails.is_empty() {
                "-".into()
            } else {
                emails.join(", ")
            },
        ]);
    }
    for name in &orphans {
        table.push([
            name.clone(),
            "no account".into(),
            "-".into(),
            "-".into(),
            "(a store only)".into(),
        ]);
    }
    write_table(&table, out)?;
    let pending = users
        .iter()
        .filter(|u| u.status == mantissa_accounts::model::status::PENDING)
        .count();
    let mut total = format!("{} user{}", users.len(), plural(users.len() as u64));
    if pending > 0 {
        total.push_str(&format!(", {pending} waiting for approval"));
    }
    if !orphans.is_empty() {
        total.push_str(&format!(
            ", {} store{} without an account",
            orphans.len(),
            plural(orphans.len() as u64)
        ));
    }
    writeln!(out, "{total}")?;
    Ok(())
}

/// Rows of cells, each column as wide as its widest cell; the last column
/// is not padded.
fn write_table<const N: usize>(table: &[[String; N]], out: &mut dyn Write) -> io::Result<()> {
    let mut widths = [0; N];
    for row in table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in table {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// `mantissa user show NAME`: one account in full, and its store.
pub fn user_show(site: &Site, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let accounts = offline_accounts(site)?;
    let store = site.existing_user_store(name)?;
    let store_line = match &store {
        Some(s) => {
            let bytes = s.bytes().unwrap_or(0);
            // Its file, from where the command runs; or its place in
            // PostgreSQL.
            let place = if site.on_postgres() {
                s.whereabouts()
            } else {
                shown(s.path()).display().to_string()
            };
            format!("{} ({}, {})", place, human_bytes(bytes), contents(s)?)
        }
        None => "none".into(),
    };
    let d = match accounts.user_details(name) {
        Ok(d) => d,
        Err(AccountError::Invalid(_)) if store.is_some() => {
            writeln!(out, "user name   {name}")?;
            writeln!(out, "account     none (a store only)")?;
            writeln!(out, "store       {store_line}")?;
            return Ok(());
        }
        Err(e) => return Err(Error::Account(e)),
    };
    let u = &d.summary;
    let mut lines: Vec<(&str, String)> = vec![
        ("user name", u.username.clone()),
        ("status", u.status.clone()),
        (
            "role",
            if u.admin { "administrator" } else { "user" }.into(),
        ),
    ];
    if u.emails.is_empty() {
        lines.push(("email", "-".into()));
    }
    for (i, e) in u.emails.iter().enumerate() {
        let state = if e.verified { "verified" } else { "unverified" };
        lines.push((
            if i == 0 { "email" } else { "" },
            format!("{} ({state})", e.address),
        ));
    }
    let joined = match d.joined_by.as_str() {
        "created" => "created by an administrator".to_string(),
        way => format!("signed up ({way})"),
    };
    let count = |n: u64| n.to_string();
    lines.extend([
        ("created", format!("{}, {joined}", when(u.created))),
        (
            "password",
            if d.has_password { "set" } else { "not set" }.into(),
        ),
        ("two-factor", if d.two_factor { "on" } else { "off" }.into()),
        ("passkeys", count(d.passkeys)),
        ("API tokens", count(d.api_tokens)),
        ("sessions", count(d.sessions)),
        ("store", store_line),
    ]);
    for (label, value) in lines {
        writeln!(out, "{label:<11} {value}")?;
    }
    Ok(())
}

/// Who the audit log says did what the command line does.
const COMMAND_LINE: &str = "(command line)";

/// Runs one of the accounts' async actions (the console's own, so that the
/// command line's are the same, audited and mailed alike) to its end, then
/// tries once to deliver the mail it queued (what cannot be delivered now
/// stays queued, and `mantissa serve` retries it).
fn act<T>(
    site: &Site,
    action: impl std::future::Future<Output = Result<T, AccountError>>,
) -> Result<T, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Signal)?;
    let done = runtime.block_on(action).map_err(Error::Account)?;
    // Done: a relay that cannot be logged in to now leaves the mail queued
    // for the server, saying why.
    let queue = match MailConfig::queue(MailConfig::load(site)?.as_ref(), site, false) {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(error = %e, "the mail stays queued");
            None
        }
    };
    if let Some(queue) = queue {
        let sent = runtime.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(120),
                queue.run_due(mantissa_store::Timestamp::now()),
            )
            .await
        });
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "running the mail queue failed"),
            Err(_) => tracing::warn!("the relay is slow: the mail stays queued for the server"),
        }
    }
    Ok(done)
}

/// `mantissa user approve NAME`.
pub fn user_approve(site: &Site, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let accounts = offline_accounts(site)?;
    match act(site, accounts.approve(COMMAND_LINE, name))? {
        mantissa_accounts::Approval::Active => writeln!(out, "Approved {name}; they can log in.")?,
        mantissa_accounts::Approval::NeedsVerifying => writeln!(
            out,
            "Approved {name}; the account works once its email address is verified."
        )?,
    }
    Ok(())
}

/// `mantissa user suspend NAME`.
pub fn user_suspend(site: &Site, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let accounts = offline_accounts(site)?;
    act(site, accounts.suspend(COMMAND_LINE, name))?;
    writeln!(
        out,
        "Suspended {name}: they cannot log in, their sessions ended, and their API tokens are revoked."
    )?;
    Ok(())
}

/// `mantissa user unsuspend NAME`.
pub fn user_unsuspend(site: &Site, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let accounts = offline_accounts(site)?;
    act(site, accounts.unsuspend(COMMAND_LINE, name))?;
    writeln!(
        out,
        "{name} can log in again (API tokens revoked by the suspension stay revoked)."
    )?;
    Ok(())
}

/// `mantissa user delete NAME` (once confirmed): the account and its store,
/// the store exported first.
pub fn user_delete(site: &Site, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    user_exists(site, name)?;
    let had_store = site.has_user_store(name)?;
    let export = offline_accounts(site)?
        .delete_user(name)
        .map_err(Error::Account)?;
    if had_store {
        writeln!(
            out,
            "Deleted user {name}; their store was exported first to {}",
            shown(&export).display()
        )?;
        writeln!(
            out,
            "Bring it back with: {}",
            Invocation::find().line(&format!(
                "user import {name} {}",
                shell_word(&shown(&export).display().to_string())
            ))
        )?;
    } else {
        writeln!(out, "Deleted user {name} (who had no store).")?;
    }
    Ok(())
}

/// `mantissa user passwd NAME`, the password given.
pub fn user_passwd(
    site: &Site,
    name: &str,
    password: &str,
    out: &mut dyn Write,
) -> Result<(), Error> {
    offline_accounts(site)?
        .set_password(name, password)
        .map_err(Error::Account)?;
    writeln!(
        out,
        "Set the password of {name}; their sessions and outstanding links have ended."
    )?;
    Ok(())
}

/// `mantissa user passwd NAME --link`: a one-time link for the owner.
pub fn user_password_link(site: &Site, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let link = offline_accounts(site)?
        .password_link(name)
        .map_err(Error::Account)?;
    writeln!(
        out,
        "Set the password of {name} (the link works once, for 24 hours): {link}"
    )?;
    Ok(())
}

/// `mantissa signup MECHANISM`: open, invitation, approval or closed.
pub fn signup_set(site: &Site, mechanism: &str, out: &mut dyn Write) -> Result<(), Error> {
    offline_accounts(site)?
        .set_signup_mechanism(mechanism)
        .map_err(Error::Account)?;
    writeln!(out, "Sign-up is now {mechanism}.")?;
    Ok(())
}

/// `mantissa signup invite`: prints a one-time invitation link.
pub fn signup_invite(site: &Site, out: &mut dyn Write) -> Result<(), Error> {
    let link = offline_accounts(site)?.invite().map_err(Error::Account)?;
    writeln!(out, "{link}")?;
    Ok(())
}

/// How `mantissa mail set` changes the mail configuration.
#[derive(Debug, Clone, Default)]
pub struct MailSettings {
    /// The sender address of the site's mail.
    pub from: Option<String>,
    /// `HOST:PORT` of an SMTP relay; `""` goes back to the outbox folder.
    pub relay: Option<String>,
    /// Implicit TLS (port 465).
    pub tls: bool,
    /// Relay user name.
    pub user: Option<String>,
    /// Relay password.
    pub password: Option<String>,
    /// How long temporary failures are retried, like `5d` or `12h`.
    pub retry_for: Option<String>,
    /// The wait before the first retry, like `1m` (it doubles after each).
    pub first_retry: Option<String>,
}

/// A duration as an operator writes it: a whole number and a unit (`s`,
/// `m`, `h` or `d`), like `90s` or `5d`.
fn parse_duration(what: &str, text: &str) -> Result<u64, Error> {
    let unit = match text.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86400,
        _ => 0,
    };
    text[..text.len().saturating_sub(1)]
        .parse::<u64>()
        .ok()
        .filter(|_| unit > 0)
        .and_then(|n| n.checked_mul(unit))
        .filter(|&n| n > 0 && n <= 365 * 86400)
        .ok_or_else(|| {
            Error::Setting(format!(
                "--{what} {text:?} is not a duration (a number and s, m, h or d, like 5d; at most a year)"
            ))
        })
}

/// `mantissa mail bounce FILE`: what the bounce parser makes of one
/// message (bounce, complaint, auto-reply or none; the failing addresses,
/// permanent or temporary, their status and reason), as JSON. Needs no
/// site: it reads the file only.
pub fn mail_bounce(file: &Path, out: &mut dyn Write) -> Result<(), Error> {
    let raw = read_message(file)?;
    let report = mantissa_mail_proto::parse(&raw).map_err(|source| Error::NotMail {
        file: file.to_path_buf(),
        source,
    })?;
    serde_json::to_writer_pretty(&mut *out, &report).map_err(io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// A message from `file`, or standard input for `-`.
fn read_message(file: &Path) -> Result<Vec<u8>, Error> {
    let read = if file == Path::new("-") {
        let mut raw = Vec::new();
        io::Read::read_to_end(&mut io::stdin(), &mut raw).map(|_| raw)
    } else {
        std::fs::read(file)
    };
    read.map_err(|source| Error::ReadMessage {
        file: file.to_path_buf(),
        source,
    })
}

/// `mantissa mail bounce --apply`: acts on one bounce, complaint or
/// auto-reply ([`mantissa_mail::bounces::apply`]) and says what it did, a
/// line for each address.
pub fn mail_bounce_apply(
    site: &Site,
    file: &Path,
    to: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    use mantissa_mail::bounces::Effect;
    let raw = read_message(file)?;
    let effects = block_on_local(mantissa_mail::bounces::apply(site, &raw, to))??;
    for effect in effects {
        match effect {
            Effect::Failing { address, reason } => writeln!(
                out,
                "{address} is failing ({reason}): the site sends it no more mail until the person asks for mail to it again"
            )?,
            Effect::Counted { address, temporary } => writeln!(
                out,
                "{address}: temporary failure {temporary} of {} before it counts as failing",
                mantissa_mail::bounces::TEMPORARY_LIMIT
            )?,
            Effect::Ignored { why } => writeln!(out, "Nothing changed: {why}.")?,
        }
    }
    Ok(())
}

/// `mantissa mail dkim generate`: a signing key for `domain` (or the
/// sender address's), kept in the site store, and the DNS record to
/// publish. Refuses to replace a domain's key unless told.
pub fn mail_dkim_generate(
    site: &Site,
    domain: Option<&str>,
    selector: Option<&str>,
    replace: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let domain = match domain {
        Some(d) => d.to_string(),
        None => {
            let from = MailConfig::load(site)?.map(|c| c.from).ok_or_else(|| {
                Error::Setting(
                    "no sender address yet: set one with `mantissa mail set --from ADDRESS`, or name the domain with --domain".into(),
                )
            })?;
            mantissa_mail::dkim::sender_domain(&from).ok_or_else(|| {
                Error::Setting(format!(
                    "the sender address {from:?} has no domain; name one with --domain"
                ))
            })?
        }
    };
    let selector = selector.map_or_else(mantissa_mail::dkim::default_selector, str::to_string);
    let key = mantissa_mail::DkimKey::generate(&domain, &selector)?;
    if let Some(old) = mantissa_mail::DkimKey::for_domain(site, &key.domain)?
        && !replace
    {
        return Err(Error::Setting(format!(
            "{} has a key already (selector {}); to replace it, publish the new record first and run again with --replace",
            old.domain, old.selector
        )));
    }
    let (name, line) = (key.record_name(), key.zone_line());
    let domain = key.domain.clone();
    mantissa_mail::DkimKey::save(site, key)?;
    writeln!(
        out,
        "Made a DKIM key for {domain}: mail from {domain} is signed from now on.\n\
         Publish this TXT record at {name} (receivers check signatures against it):\n\n{line}\n"
    )?;
    Ok(())
}

/// `mantissa mail dkim show`: the DNS record of each key.
pub fn mail_dkim_show(site: &Site, out: &mut dyn Write) -> Result<(), Error> {
    let keys = mantissa_mail::DkimKey::all(site)?;
    if keys.is_empty() {
        writeln!(
            out,
            "No DKIM key: mail goes out unsigned. Make one with `mantissa mail dkim generate`."
        )?;
    }
    for key in keys {
        writeln!(
            out,
            "{} (selector {}):\n{}\n",
            key.domain,
            key.selector,
            key.zone_line()
        )?;
    }
    Ok(())
}

/// `mantissa mail dmarc`: the aggregate reports received, latest first,
/// and the record that asks for them.
pub fn mail_dmarc(site: &Site, json: bool, out: &mut dyn Write) -> Result<(), Error> {
    let reports = block_on_local(mantissa_mail::dmarc::recent(site, 100))??;
    if json {
        let rows: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "org": r.org,
                    "report_id": r.report_id,
                    "domain": r.domain,
                    "begin": r.begin.to_string(),
                    "end": r.end.to_string(),
                    "messages": r.messages,
                    "passed": r.passed,
                    "dkim_failed": r.dkim_failed,
                    "spf_failed": r.spf_failed,
                    "failing_sources": r.failing_sources.lines().collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    let domain = mail_domain(MailConfig::load(site)?.as_ref());
    if reports.is_empty() {
        writeln!(
            out,
            "No DMARC reports yet. To have receivers send them, publish\n\n{}\n\nand receive mail (`mantissa port add smtp ADDR`, reached as the domain's MX).",
            mantissa_mail::dmarc::record_for(&domain)
        )?;
        return Ok(());
    }
    for r in &reports {
        writeln!(
            out,
            "{} to {}  {}  {}: {} of {} messages passed DMARC ({} failed DKIM, {} failed SPF)",
            r.begin, r.end, r.domain, r.org, r.passed, r.messages, r.dkim_failed, r.spf_failed
        )?;
        for source in r.failing_sources.lines() {
            writeln!(out, "    failing both, from {source}")?;
        }
    }
    Ok(())
}

/// `mantissa mail set`: the sender address and the SMTP relay.
pub fn mail_set(site: &Site, settings: MailSettings, out: &mut dyn Write) -> Result<(), Error> {
    // Every value is checked before anything is written.
    let retry_for = settings
        .retry_for
        .as_deref()
        .map(|t| parse_duration("retry-for", t))
        .transpose()?;
    let first_retry = settings
        .first_retry
        .as_deref()
        .map(|t| parse_duration("first-retry", t))
        .transpose()?;
    let mut c = MailConfig::load(site)?.unwrap_or(MailConfig {
        from: "mantissa@localhost".into(),
        relay: None,
        relay_tls: false,
        username: None,
        password_sealed: None,
    });
    if let Some(from) = settings.from {
        if !from.contains('@') || from.contains(char::is_whitespace) {
            return Err(Error::Setting(format!("{from:?} is not an email address")));
        }
        c.from = from;
    }
    if let Some(relay) = settings.relay {
        if relay.is_empty() {
            c.relay = None;
        } else {
            let port_ok = relay
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !port_ok {
                return Err(Error::Setting(format!(
                    "{relay:?} is not HOST:PORT (like smtp.example.org:587)"
                )));
            }
            c.relay = Some(relay);
        }
        c.relay_tls = settings.tls;
        c.username = settings.user;
        // Sealed with the site's key (made now if there is none): the
        // store never holds the password itself.
        c.set_password(site, settings.password.as_deref())
            .map_err(mantissa_mail::MailError::from)?;
    }
    // Said after the save, which it does not stop: a key that does not
    // open the password is the environment's to fix, not this command's.
    let key_from = c
        .password_sealed
        .is_some()
        .then(|| MailConfig::secret_key(site, false).map(|k| k.source().to_string()));
    MailConfig::save(site, c.clone())?;
    if retry_for.is_some() || first_retry.is_some() {
        let mut q = mantissa_mail::QueueConfig::load(site)?.unwrap_or_default();
        if let Some(secs) = retry_for {
            q.give_up_after_secs = secs as i64;
        }
        if let Some(secs) = first_retry {
            q.first_retry_secs = secs as i64;
        }
        mantissa_mail::QueueConfig::save(site, q.clone())?;
        writeln!(
            out,
            "Mail that cannot be delivered yet is retried for {}, first after {}.",
            shown_duration(q.give_up_after_secs),
            shown_duration(q.first_retry_secs)
        )?;
    }
    match key_from {
        Some(Ok(from)) => writeln!(
            out,
            "The relay password is kept sealed with the key from {from} (keep a copy of it apart from the site's backups: without it, the password must be set again)."
        )?,
        Some(Err(e)) => writeln!(out, "The relay password cannot be opened now: {e}")?,
        None => {}
    }
    match &c.relay {
        Some(r) => writeln!(out, "Mail from {} goes through {r}.", c.from)?,
        None => writeln!(
            out,
            "Mail from {} is written to {}.",
            c.from,
            site.root().join("outbox").display()
        )?,
    }
    Ok(())
}

/// `mantissa mail queue`: the messages waiting, being sent or given up
/// (with `all`, the delivered ones too), each with its state, attempts,
/// next try and last error; as JSON with `json`.
pub fn mail_queue(site: &Site, all: bool, json: bool, out: &mut dyn Write) -> Result<(), Error> {
    let list = block_on_local(mantissa_mail::admin::list(site, all))??;
    if json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|m| {
                let t = |t: Option<mantissa_store::Timestamp>| t.map(|t| t.to_string());
                serde_json::json!({
                    "id": m.id().id(),
                    "state": m.mail_state().as_str(),
                    "from": m.sender,
                    "to": m.recipient_list(),
                    "subject": m.subject,
                    "destination": m.destination,
                    "attempts": m.attempts,
                    "queued_at": m.queued_at.to_string(),
                    "next_try": t(m.next_try),
                    "last_try": t(m.last_try),
                    "last_error": m.last_error,
                    "finished_at": t(m.finished_at),
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    if list.is_empty() {
        writeln!(
            out,
            "{}",
            if all {
                "The mail queue is empty."
            } else {
                "No mail is waiting or failed."
            }
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>6}  {:<9}  {:>8}  {:<20}  {:<30}  last error",
        "id", "state", "attempts", "next try / done", "to"
    )?;
    for m in &list {
        let at = m.next_try.or(m.finished_at).map_or("-".into(), when);
        writeln!(
            out,
            "{:>6}  {:<9}  {:>8}  {:<20}  {:<30}  {}",
            m.id().id(),
            m.mail_state().as_str(),
            m.attempts,
            at,
            m.recipient_list().join(", "),
            m.last_error.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

/// `mantissa mail queue retry ID|--all`: makes queued or failed messages
/// due now (the server sends them within seconds).
pub fn mail_queue_retry(site: &Site, id: Option<i64>, out: &mut dyn Write) -> Result<(), Error> {
    match id {
        Some(id) => {
            block_on_local(mantissa_mail::admin::retry(site, id))??;
            writeln!(out, "Message {id} will be tried again now.")?;
        }
        None => {
            let n = block_on_local(mantissa_mail::admin::retry_all(site))??;
            writeln!(out, "{n} message(s) will be tried again now.")?;
        }
    }
    Ok(())
}

/// `mantissa mail queue drop ID`: takes a message out of the queue; it is
/// not sent.
pub fn mail_queue_drop(site: &Site, id: i64, out: &mut dyn Write) -> Result<(), Error> {
    block_on_local(mantissa_mail::admin::drop_message(site, id))??;
    writeln!(out, "Dropped message {id}; it will not be sent.")?;
    Ok(())
}

/// Seconds as the largest whole unit that divides them (`5d`, `90s`).
fn shown_duration(secs: i64) -> String {
    match secs {
        s if s > 0 && s % 86400 == 0 => format!("{}d", s / 86400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Runs a future to its end on a runtime of its own.
fn block_on_local<F: std::future::Future>(f: F) -> Result<F::Output, Error> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Signal)?
        .block_on(f))
}

/// Prints the site's web configuration.
pub fn site_show(site: &Site, out: &mut dyn Write) -> Result<(), Error> {
    let c = SiteConfig::load_or_init(site)?;
    writeln!(out, "name         {}", c.name)?;
    writeln!(out, "tagline      {}", c.tagline)?;
    writeln!(out, "contact      {}", c.contact.as_deref().unwrap_or("-"))?;
    writeln!(
        out,
        "theme        {}",
        c.theme.as_deref().unwrap_or("- (default)")
    )?;
    writeln!(out, "crawl-delay  {}", c.crawl_delay)?;
    writeln!(out, "hsts-max-age {}", c.hsts_max_age)?;
    let or_none = |v: &str| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.to_string()
        }
    };
    writeln!(out, "trusted-proxies {}", or_none(&c.trusted_proxies))?;
    writeln!(out, "metrics-from {}", or_none(&c.metrics_from))?;
    writeln!(out, "robots:\n{}", c.robots)?;
    Ok(())
}

/// Changes one setting of the site's web configuration. `robots` takes
/// `@FILE` to read the text from a file.
pub fn site_set(site: &Site, key: &str, value: &str, out: &mut dyn Write) -> Result<(), Error> {
    let mut c = SiteConfig::load_or_init(site)?;
    let optional = |v: &str| (!v.is_empty()).then(|| v.to_string());
    match key {
        "name" if !value.trim().is_empty() => c.name = value.to_string(),
        "name" => return Err(Error::Setting("the name cannot be empty".into())),
        "tagline" => c.tagline = value.to_string(),
        "contact" => c.contact = optional(value),
        "theme" => {
            if value.contains(['/', '\\']) || value.starts_with('.') {
                return Err(Error::Setting(format!(
                    "{value:?} is not a theme name: it names a folder under themes/"
                )));
            }
            let dir = site.root().join("themes").join(value);
            if !value.is_empty() && !dir.is_dir() {
                return Err(Error::Setting(format!("no theme folder {}", dir.display())));
            }
            c.theme = optional(value);
        }
        "robots" => {
            c.robots = match value.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(file)
                    .map_err(|e| Error::Setting(format!("cannot read {file}: {e}")))?,
                None => value.replace("\\n", "\n"),
            }
        }
        "crawl-delay" => {
            c.crawl_delay = value
                .parse::<u32>()
                .map_err(|_| Error::Setting(format!("{value:?} is not a number of seconds")))?
                .into()
        }
        "hsts-max-age" => {
            c.hsts_max_age = value
                .parse::<u32>()
                .map_err(|_| {
                    Error::Setting(format!("{value:?} is not a number of seconds (0: no HSTS)"))
                })?
                .into()
        }
        "trusted-proxies" | "metrics-from" => {
            mantissa_web::AddressList::parse(value).map_err(|e| Error::Setting(e.to_string()))?;
            let list = value.trim().to_string();
            if key == "trusted-proxies" {
                c.trusted_proxies = list;
            } else {
                c.metrics_from = list;
            }
        }
        other => {
            return Err(Error::Setting(format!(
                "unknown setting {other:?}; use name, tagline, contact, theme, robots, crawl-delay, hsts-max-age, trusted-proxies or metrics-from"
            )));
        }
    }
    SiteConfig::save(site, c)?;
    writeln!(
        out,
        "Set {key}; a running `mantissa serve` picks it up when restarted."
    )?;
    Ok(())
}

/// Runs every background schema upgrade of every store to the end, with a
/// progress bar.
pub fn store_upgrade(site: &Site, out: &mut dyn Write) -> Result<(), Error> {
    // On PostgreSQL: the stores whose items of an upgraded type have not
    // moved to its new table yet.
    let moved = site.finish_upgrades()?;
    if moved > 0 {
        writeln!(
            out,
            "Moved the items of {moved} store{} to their upgraded tables.",
            plural(moved as u64)
        )?;
    }
    let mut names = vec![None];
    names.extend(site.user_names()?.into_iter().map(Some));
    let mut upgraded = 0;
    for name in names {
        let store = match &name {
            None => site.store().clone(),
            Some(n) => match site.existing_user_store(n)? {
                Some(s) => s,
                None => continue,
            },
        };
        let pending = store.upgrades_in_progress();
        if pending.is_empty() {
            continue;
        }
        let total: u64 = pending.iter().map(|p| p.total).sum();
        let bar = progress_bar(total, &format!("upgrading {}", store.name()));
        let b = bar.clone();
        store.finish_upgrades(move |p| b.set_position(p.done.min(total)))?;
        bar.finish_and_clear();
        writeln!(out, "{}: upgraded {} item(s)", store.name(), total)?;
        upgraded += 1;
    }
    if upgraded == 0 && moved == 0 {
        writeln!(out, "Every store is up to date.")?;
    }
    Ok(())
}

/// Adds a listening port to the site.
pub fn port_add(site: &Site, port: Port, out: &mut dyn Write) -> Result<(), Error> {
    let shown_port = format!("{} {}", port.protocol, port.address);
    Port::add(site, port, PROTOCOLS).map_err(Error::Port)?;
    writeln!(
        out,
        "Added port {shown_port}; it is used from the next `mantissa serve`."
    )?;
    Ok(())
}

/// Lists the site's ports.
pub fn port_list(site: &Site, out: &mut dyn Write) -> Result<(), Error> {
    let ports = Port::list(site).map_err(Error::Store)?;
    if ports.is_empty() {
        writeln!(
            out,
            "No ports; `mantissa serve` listens on {DEFAULT_LISTEN}."
        )?;
    }
    for p in ports {
        match (&p.cert, &p.key) {
            (Some(c), Some(k)) => {
                writeln!(out, "{:<6} {:<22} cert {c} key {k}", p.protocol, p.address)?
            }
            _ => writeln!(out, "{:<6} {}", p.protocol, p.address)?,
        }
    }
    Ok(())
}

/// Removes a port.
pub fn port_remove(
    site: &Site,
    protocol: &str,
    address: &str,
    out: &mut dyn Write,
) -> Result<(), Error> {
    Port::remove(site, protocol, address).map_err(Error::Port)?;
    writeln!(out, "Removed port {protocol} {address}.")?;
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix, listened for from the moment it is made.
struct StopSignal {
    #[cfg(unix)]
    signals: (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
}

impl StopSignal {
    fn listen() -> io::Result<StopSignal> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignal {
                signals: (
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                ),
            })
        }
        #[cfg(not(unix))]
        {
            Ok(StopSignal {})
        }
    }

    async fn wait(self) -> io::Result<()> {
        #[cfg(unix)]
        {
            let (mut int, mut term) = self.signals;
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            Ok(())
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await
        }
    }
}

/// A path as shown to a person: absolute, so it can be pasted elsewhere.
fn shown(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The bytes of every file under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// `1536` → `"1.5 KiB"`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(32 * 1024 * 1024), "32.0 MiB");
    }

    #[test]
    fn the_stats_table_aligns_and_names_unreadable_stores() {
        let rows = vec![
            StatsRow {
                name: "site".into(),
                path: "site.sqlite".into(),
                bytes: Some(4096),
                items: Some(serde_json::Map::new()),
                files: Some(FilesRow { count: 0, bytes: 0 }),
                scheduled: Some(0),
                upgrading: Vec::new(),
                error: None,
            },
            StatsRow {
                name: "alice".into(),
                path: "users/alice.sqlite".into(),
                bytes: Some(2048),
                items: Some(
                    [("blog.post".to_string(), serde_json::Value::from(3))]
                        .into_iter()
                        .collect(),
                ),
                files: Some(FilesRow {
                    count: 1,
                    bytes: 12,
                }),
                scheduled: Some(2),
                upgrading: Vec::new(),
                error: None,
            },
            StatsRow::new(
                "bob",
                "users/bob.sqlite".into(),
                Err(StoreError::NotAStore {
                    path: "users/bob.sqlite".into(),
                    reason: "the file is not a SQLite database".into(),
                }),
            ),
        ];
        let mut out = Vec::new();
        write_stats_table(&rows, "on disk", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "\
store  size     files     scheduled  items
site   4.0 KiB  0         0          -
alice  2.0 KiB  1 (12 B)  2          blog.post 3
bob    -        -         -          cannot be read: users/bob.sqlite: not a Mantissa store (the file is not a SQLite database)
3 stores, 6.0 KiB on disk
"
        );
    }
}
