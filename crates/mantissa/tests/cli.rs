//! The `mantissa` command line, run as a person runs it: the real binary, in
//! a fresh folder, judged by what it prints, what it leaves on disk and its
//! exit code.

use std::borrow::BorrowMut;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mantissa::store::{Item, Ref, Site};

#[derive(Item, Debug)]
#[item(name = "cli.note", version = 1)]
struct Note {
    #[item(index)]
    title: String,
}

#[derive(Item, Debug)]
#[item(name = "cli.tag", version = 1)]
struct Tag {
    #[item(on_delete = "cascade")]
    note: Ref<Note>,
    label: String,
}

/// `mantissa ARGS` in `cwd`, with no MANTISSA_SITE (nor a secret key or
/// relay password from the environment) unless a test sets one,
/// and a default site folder (`$XDG_DATA_HOME/mantissa/site`) in
/// `cwd/xdg-data`, not the real one of whoever runs the tests.
fn mantissa(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mantissa"));
    cmd.current_dir(cwd)
        .args(args)
        .env("XDG_DATA_HOME", cwd.join("xdg-data"))
        .env_remove("MANTISSA_SITE")
        .env_remove("MANTISSA_LOG")
        .env_remove("MANTISSA_URL")
        .env_remove("MANTISSA_SECRET_KEY")
        .env_remove("MANTISSA_MAIL_PASSWORD")
        .stdin(Stdio::null());
    cmd
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(mut cmd: impl BorrowMut<Command>) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.borrow_mut().output().expect("run mantissa");
    Run {
        code: status.code().expect("exited, not killed"),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn ok(cmd: impl BorrowMut<Command>) -> Run {
    let r = run(cmd);
    assert_eq!(r.code, 0, "expected success: {r:?}");
    r
}

/// A site with the stores "alice" (3 notes, 2 tags, 1 attached file) and
/// "bob" (1 note), written through the library as an application would.
fn populated_site() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("site");
    let site = Site::open(&dir).unwrap();
    site.user_store("alice")
        .unwrap()
        .write_blocking(|tx| {
            let first = tx.insert(&Note {
                title: "first".into(),
            })?;
            for title in ["second", "third"] {
                tx.insert(&Note {
                    title: title.into(),
                })?;
            }
            for label in ["a", "b"] {
                tx.insert(&Tag {
                    note: first,
                    label: label.into(),
                })?;
            }
            tx.attach_file(first, "notes.txt", b"hello, file")
        })
        .unwrap();
    site.user_store("bob")
        .unwrap()
        .write_blocking(|tx| tx.insert(&Note { title: "hi".into() }))
        .unwrap();
    drop(site);
    (tmp, dir)
}

fn stats_json(cwd: &Path, site: &Path) -> serde_json::Value {
    let r = ok(mantissa(
        cwd,
        &["--site", site.to_str().unwrap(), "store", "stats", "--json"],
    ));
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

/// `{"alice": {"cli.note": 3, ...}, ...}` from `store stats --json`.
fn item_counts(stats: &serde_json::Value, store: &str) -> serde_json::Value {
    stats["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == store)
        .unwrap_or_else(|| panic!("no store {store} in {stats}"))["items"]
        .clone()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn init_creates_a_site_and_leaves_an_existing_one_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let r = ok(mantissa(tmp.path(), &["init", "mysite"]));
    let dir = tmp.path().join("mysite");
    assert!(dir.join("site.sqlite").is_file());
    assert!(dir.join("users").is_dir());
    assert!(
        r.stdout.contains("Created a Mantissa site in") && r.stdout.contains("mysite"),
        "{r:?}"
    );

    let before = std::fs::read(dir.join("site.sqlite")).unwrap();
    let r = ok(mantissa(tmp.path(), &["init", "mysite"]));
    assert!(r.stdout.contains("already exists"), "{r:?}");
    assert_eq!(std::fs::read(dir.join("site.sqlite")).unwrap(), before);
}

/// Issue 14, item 12: `mantissa init` (like `serve`) without a folder no
/// longer makes a site in the current folder (a checkout, as often as
/// not), but in the user's data folder; the current folder is used when
/// it holds a site, or when named.
#[test]
fn init_without_a_folder_uses_the_default_site_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let here = tmp.path().join("checkout");
    std::fs::create_dir(&here).unwrap();
    let data = tmp.path().join("data");
    let default = data.join("mantissa/site");
    let r = ok(mantissa(&here, &["init"]).env("XDG_DATA_HOME", &data));
    assert!(default.join("site.sqlite").is_file(), "{r:?}");
    assert!(files_in(&here).is_empty(), "nothing in the current folder");
    assert!(
        r.stdout.starts_with(&format!(
            "Created a Mantissa site in {} (the default site folder)\n",
            default.display()
        )),
        "{r:?}"
    );
    // Any command finds it from anywhere, without --site.
    let r = ok(mantissa(&here, &["site", "show"]).env("XDG_DATA_HOME", &data));
    assert!(r.stdout.starts_with("name         site\n"), "{r:?}");
    let r = ok(mantissa(&here, &["init"]).env("XDG_DATA_HOME", &data));
    assert!(
        r.stdout.contains("already exists") && r.stdout.contains("(the default site folder)"),
        "{r:?}"
    );

    // Named, the current folder gets a site, and is then the one used there.
    ok(mantissa(&here, &["init", "."]).env("XDG_DATA_HOME", &data));
    assert!(here.join("site.sqlite").is_file());
    let r = ok(mantissa(&here, &["site", "show"]).env("XDG_DATA_HOME", &data));
    assert!(r.stdout.starts_with("name         checkout\n"), "{r:?}");

    // Without XDG_DATA_HOME, the data folder is ~/.local/share.
    let home = tmp.path().join("home");
    let r = ok(mantissa(tmp.path(), &["init"])
        .env_remove("XDG_DATA_HOME")
        .env("HOME", &home));
    assert!(
        home.join(".local/share/mantissa/site/site.sqlite")
            .is_file(),
        "{r:?}"
    );
}

/// `init` says how to run the new site: by name when the PATH finds this
/// very binary, else by its path or with `cargo run` from the sources.
#[cfg(unix)]
#[test]
fn init_says_how_to_run_the_binary_on_the_path_or_not() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("my site");
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_mantissa")).unwrap();
    let r = ok(mantissa(tmp.path(), &["init", "my site"]).env("PATH", "/usr/bin:/bin"));
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[1],
        format!(
            "Run it with: {} --site '{}' serve",
            exe.display(),
            site.display()
        ),
        "{r:?}"
    );
    assert_eq!(
        lines[2],
        format!(
            "or, in its source folder: cargo run --release -p mantissa -- --site '{}' serve",
            site.display()
        ),
        "{r:?}"
    );
    assert!(
        lines[3].starts_with("(`mantissa` alone is not on your PATH"),
        "{r:?}"
    );

    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(&exe, bin.join("mantissa")).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let r = ok(mantissa(tmp.path(), &["init", "other"]).env("PATH", &path));
    assert_eq!(
        r.stdout,
        format!(
            "Created a Mantissa site in {0}\nRun it with: mantissa --site {0} serve\n",
            tmp.path().join("other").display()
        )
    );
}

#[test]
fn version_is_printed() {
    let tmp = tempfile::tempdir().unwrap();
    for flag in ["--version", "-V"] {
        let r = ok(mantissa(tmp.path(), &[flag]));
        assert_eq!(
            r.stdout,
            format!("mantissa {}\n", env!("CARGO_PKG_VERSION")),
            "{r:?}"
        );
    }
}

#[test]
fn the_site_is_found_by_flag_or_by_environment() {
    let (tmp, dir) = populated_site();
    let elsewhere = tmp.path();

    let by_flag = ok(mantissa(
        elsewhere,
        &["--site", dir.to_str().unwrap(), "store", "check"],
    ));
    // The flag is global: it may also follow the command.
    let after = ok(mantissa(
        elsewhere,
        &["store", "check", "--site", dir.to_str().unwrap()],
    ));
    let by_env = ok(mantissa(elsewhere, &["store", "check"]).env("MANTISSA_SITE", &dir));
    for r in [&by_flag, &after, &by_env] {
        assert_eq!(r.stdout, "3 stores checked, all healthy\n", "{r:?}");
    }

    ok(mantissa(elsewhere, &["init"]).env("MANTISSA_SITE", tmp.path().join("new")));
    assert!(tmp.path().join("new/site.sqlite").is_file());
}

#[test]
fn stats_count_items_files_and_stores() {
    let (tmp, dir) = populated_site();
    let r = ok(mantissa(&dir, &["store", "stats"]));
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{r:?}");
    assert!(lines[0].starts_with("store"), "{r:?}");
    assert!(lines[1].starts_with("site "), "{r:?}");
    assert!(lines[2].starts_with("alice "), "{r:?}");
    assert!(lines[2].contains("cli.note 3, cli.tag 2"), "{r:?}");
    assert!(lines[2].contains("1 (11 B)"), "one file of 11 bytes: {r:?}");
    assert!(
        lines[3].starts_with("bob ") && lines[3].contains("cli.note 1"),
        "{r:?}"
    );
    assert!(lines[4].starts_with("3 stores, "), "{r:?}");

    let json = stats_json(tmp.path(), &dir);
    assert_eq!(
        item_counts(&json, "alice"),
        serde_json::json!({"cli.note": 3, "cli.tag": 2})
    );
    assert_eq!(
        item_counts(&json, "bob"),
        serde_json::json!({"cli.note": 1})
    );
    assert_eq!(item_counts(&json, "site"), serde_json::json!({}));
    let alice = &json["stores"][1];
    assert_eq!(alice["files"], serde_json::json!({"count": 1, "bytes": 11}));
    assert_eq!(alice["scheduled"], 0);
    assert!(alice["bytes"].as_u64().unwrap() > 0);
    assert!(
        alice["path"]
            .as_str()
            .unwrap()
            .ends_with("users/alice.sqlite")
    );
}

#[test]
fn a_backup_is_a_healthy_site_with_the_same_items() {
    let (tmp, dir) = populated_site();
    let r = ok(mantissa(&dir, &["backup", "../copy"]));
    assert!(r.stdout.starts_with("Backed up 3 stores"), "{r:?}");
    let copy = tmp.path().join("copy");
    assert_eq!(
        files_in(&copy.join("users")),
        ["alice.files", "alice.sqlite", "bob.sqlite"]
    );

    let r = ok(mantissa(tmp.path(), &["--site", "copy", "store", "check"]));
    assert_eq!(r.stdout, "3 stores checked, all healthy\n");
    let (original, backup) = (stats_json(tmp.path(), &dir), stats_json(tmp.path(), &copy));
    for store in ["site", "alice", "bob"] {
        assert_eq!(
            item_counts(&original, store),
            item_counts(&backup, store),
            "{store}"
        );
    }

    // A backup never overwrites.
    let r = run(mantissa(&dir, &["backup", "../copy"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("already exists"), "{r:?}");
    assert!(
        copy.join("site.sqlite").is_file(),
        "the earlier backup is kept"
    );
    // Issue 14, item 12: and it says what is true: nothing was written (not
    // that a partial backup was removed).
    assert_eq!(
        r.stderr,
        format!(
            "error: cannot back up to {}: it already exists (a backup makes a new folder); nothing was written\n",
            dir.join("../copy").display()
        )
    );
}

#[test]
fn export_then_import_under_another_name_round_trips() {
    let (tmp, dir) = populated_site();
    let file = tmp.path().join("alice.export");
    let r = ok(mantissa(
        &dir,
        &["user", "export", "alice", file.to_str().unwrap()],
    ));
    assert!(
        r.stdout
            .starts_with("Exported user alice (5 items, 1 file) to "),
        "{r:?}"
    );
    assert!(file.is_file());

    let r = ok(mantissa(
        &dir,
        &["user", "import", "carol", file.to_str().unwrap()],
    ));
    assert!(
        r.stdout.contains("as user carol (5 items, 1 file)"),
        "{r:?}"
    );
    let json = stats_json(tmp.path(), &dir);
    assert_eq!(item_counts(&json, "carol"), item_counts(&json, "alice"));
    assert_eq!(json["stores"].as_array().unwrap().len(), 4);

    // The attached file came along.
    let site = Site::open_existing(&dir).unwrap();
    let text = site
        .user_store("carol")
        .unwrap()
        .read_blocking(|r| {
            let note = r.query::<Note>().filter(Note::title.eq("first")).first()?;
            r.file(note.unwrap().id(), "notes.txt")
        })
        .unwrap();
    assert_eq!(text.as_deref(), Some(&b"hello, file"[..]));
    drop(site);
    ok(mantissa(&dir, &["store", "check"]));

    // Importing over an existing user is refused.
    let r = run(mantissa(
        &dir,
        &["user", "import", "bob", file.to_str().unwrap()],
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("already has a store"), "{r:?}");
    assert_eq!(
        item_counts(&stats_json(tmp.path(), &dir), "bob"),
        serde_json::json!({"cli.note": 1})
    );
}

#[test]
fn commands_outside_a_site_say_so_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["store", "stats"][..],
        &["store", "check"],
        &["backup", "b"],
        &["user", "export", "alice", "x"],
        &["user", "import", "alice", "x"],
    ] {
        let r = run(mantissa(tmp.path(), args));
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:?}");
        assert!(
            r.stderr
                .starts_with("error: cannot open the Mantissa site in "),
            "{args:?}: {r:?}"
        );
        assert!(
            r.stderr.contains("caused by: ")
                && r.stderr.contains("no Mantissa site here")
                && r.stderr.contains("mantissa init"),
            "{args:?}: {r:?}"
        );
        assert!(files_in(tmp.path()).is_empty(), "{args:?} created files");
    }
}

#[test]
fn check_names_a_store_replaced_by_garbage() {
    let (tmp, dir) = populated_site();
    let bob = dir.join("users/bob.sqlite");
    std::fs::write(
        &bob,
        b"this is not a database, just some bytes ".repeat(200),
    )
    .unwrap();

    let r = run(mantissa(
        tmp.path(),
        &["--site", dir.to_str().unwrap(), "store", "check"],
    ));
    assert_eq!(r.code, 1, "{r:?}");
    let bad: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(bad.len(), 1, "only bob is damaged: {r:?}");
    assert!(bad[0].starts_with("bob: "), "{r:?}");
    assert!(
        bad[0].contains(bob.to_str().unwrap()),
        "names the file: {r:?}"
    );
    assert_eq!(r.stderr, "error: 1 problem(s) found in 1 of 3 stores\n");

    // Stats still show the healthy stores, and name the broken one.
    let r = run(mantissa(&dir, &["store", "stats"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("alice "), "{r:?}");
    assert!(
        r.stdout.contains("bob ") && r.stdout.contains("cannot be read"),
        "{r:?}"
    );
}

#[test]
fn importing_a_file_that_is_not_an_export_fails_and_creates_nothing() {
    let (tmp, dir) = populated_site();
    let users_before = files_in(&dir.join("users"));
    let text = tmp.path().join("notes.txt");
    std::fs::write(
        &text,
        "Dear diary, today I imported a text file.\n".repeat(100),
    )
    .unwrap();

    let r = run(mantissa(
        &dir,
        &["user", "import", "dave", text.to_str().unwrap()],
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.starts_with("error: importing ")
            && r.stderr.contains("notes.txt")
            && r.stderr.contains("no store was created"),
        "{r:?}"
    );
    assert!(r.stderr.contains("caused by: "), "{r:?}");
    assert_eq!(files_in(&dir.join("users")), users_before);

    let missing = tmp.path().join("nowhere.export");
    let r = run(mantissa(
        &dir,
        &["user", "import", "dave", missing.to_str().unwrap()],
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("nowhere.export") && r.stderr.contains("no such file"),
        "{r:?}"
    );
    assert_eq!(files_in(&dir.join("users")), users_before);
}

#[test]
fn exporting_a_user_without_a_store_fails_and_writes_nothing() {
    let (tmp, dir) = populated_site();
    let file = tmp.path().join("zed.export");
    let r = run(mantissa(
        &dir,
        &["user", "export", "zed", file.to_str().unwrap()],
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no user store named \"zed\""), "{r:?}");
    assert!(!file.exists());
}

#[test]
fn bad_usage_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["frobnicate"][..],
        &["user", "export", "Not A Name", "x"],
        &["serve", "--listen", "not-an-address"],
        &["serve", "--url", "ftp://example.org"],
        &["serve", "--url", "https://example.org/blog"],
        &["serve", "--url", "https://"],
        &[],
    ] {
        let r = run(mantissa(tmp.path(), args));
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("Usage:") || r.stderr.contains("error:"),
            "{r:?}"
        );
    }
    let r = ok(mantissa(tmp.path(), &["--help"]));
    assert!(r.stdout.contains("serve"), "{r:?}");
    assert!(files_in(tmp.path()).is_empty());
}

#[cfg(unix)]
#[test]
fn serve_opens_the_site_and_stops_on_sigterm_or_ctrl_c() {
    use std::io::{BufRead, BufReader};

    for signal in ["TERM", "INT"] {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = mantissa(
            tmp.path(),
            &["serve", "--site", "s", "--listen", "127.0.0.1:0"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert!(first.starts_with("Mantissa site \"s\" ("), "{first:?}");
        let mut second = String::new();
        out.read_line(&mut second).unwrap();
        let url = second
            .strip_prefix("Serving http://")
            .and_then(|u| u.strip_suffix("/\n"))
            .unwrap_or_else(|| panic!("{second:?}"));
        assert!(tmp.path().join("s/site.sqlite").is_file());
        // It serves the site's front page, with the site's name.
        let page = http_get(url, "/");
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        assert!(page.contains("<h1>s</h1>"), "{page}");

        // Sent the moment it says it runs: it must already be listening.
        let kill = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "stops cleanly on SIG{signal}");
        // It says that it has stopped, last.
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        assert!(
            rest.ends_with(&format!(
                "\nStopped. The site's files in {} are complete, and may be copied.\n",
                tmp.path().join("s").display()
            )),
            "{rest:?}"
        );
        // Stopped, the site store is its one file: nothing is left in its
        // write-ahead log, and a copy of the file alone has what it wrote
        // while serving (the administrator's one-time link).
        let store = tmp.path().join("s/site.sqlite");
        let wal = std::fs::metadata(tmp.path().join("s/site.sqlite-wal")).map_or(0, |m| m.len());
        assert_eq!(wal, 0, "the log was folded back on SIG{signal}");
        let copy = tmp.path().join("copy.sqlite");
        std::fs::copy(&store, &copy).unwrap();
        let c = rusqlite::Connection::open(&copy).unwrap();
        let tables: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'item_%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(tables > 0, "the copy holds the site's items");
    }
}

#[cfg(unix)]
#[test]
fn serve_url_is_where_links_point() {
    use std::io::{BufRead, BufReader};

    let tmp = tempfile::tempdir().unwrap();
    let mut child = mantissa(
        tmp.path(),
        &["serve", "--site", "s", "--listen", "127.0.0.1:0"],
    )
    .env("MANTISSA_URL", "https://example.org")
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let lines: Vec<String> = out
        .lines()
        .map(Result::unwrap)
        .take_while(|l| !l.starts_with("Press Ctrl-C"))
        .collect();
    assert!(
        lines[1].starts_with("Serving http://127.0.0.1:"),
        "{lines:?}"
    );
    assert_eq!(
        lines[2],
        "Reached at https://example.org (links in mail, passkeys)"
    );
    // The first run's one-time link for the administrator's password.
    assert!(
        lines[3].starts_with("Set the administrator's password (once): https://example.org/reset/"),
        "{lines:?}"
    );
    // With the user name to log in with afterwards.
    assert_eq!(
        lines[4],
        "The administrator's user name is \"admin\": then log in at https://example.org/login, and manage the site at https://example.org/admin.",
    );
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Issue 14, item 12: the README's first command, run in a checkout,
/// leaves nothing there: the site is made in the user's data folder, and
/// `serve` says where.
#[cfg(unix)]
#[test]
fn serve_without_a_site_keeps_its_data_out_of_the_source_tree() {
    use std::io::{BufRead, BufReader, Read};

    let tmp = tempfile::tempdir().unwrap();
    let checkout = tmp.path().join("checkout");
    std::fs::create_dir(&checkout).unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .current_dir(&checkout)
            .args(args)
            .output()
            .expect("git runs");
        assert!(o.status.success(), "git {args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    git(&["init", "-q"]);
    std::fs::write(checkout.join("README.md"), "sources\n").unwrap();
    let before = git(&["status", "--porcelain", "--untracked-files=all"]);

    let data = tmp.path().join("data");
    let mut child = mantissa(&checkout, &["serve", "--listen", "127.0.0.1:0"])
        .env("XDG_DATA_HOME", &data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut banner = Vec::new();
    while banner
        .last()
        .is_none_or(|l: &String| !l.starts_with("Press Ctrl-C"))
    {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "{banner:?}");
        banner.push(line.trim_end().to_string());
    }
    let site = data.join("mantissa/site");
    assert_eq!(
        banner[0],
        format!("Mantissa site \"site\" ({})", site.display())
    );
    assert_eq!(
        banner[1],
        "(the default site folder; --site DIR or MANTISSA_SITE chooses another)"
    );
    assert!(site.join("site.sqlite").is_file());
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("Stopped. "), "{rest:?}");

    assert_eq!(files_in(&checkout), [".git", "README.md"]);
    assert_eq!(
        git(&["status", "--porcelain", "--untracked-files=all"]),
        before
    );
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut s = String::new();
    if let Err(e) = c.read_to_string(&mut s) {
        s.push_str(&format!("(reading the answer failed: {e})"));
    }
    s
}

#[test]
fn ports_are_added_listed_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("s");
    let r = run(mantissa(tmp.path(), &["init", site.to_str().unwrap()]));
    assert!(r.code == 0, "{r:?}");
    let s = site.to_str().unwrap();
    let r = run(mantissa(tmp.path(), &["--site", s, "port", "list"]));
    assert_eq!(
        r.stdout,
        "No ports; `mantissa serve` listens on 127.0.0.1:8080.\n"
    );
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "port", "add", "http", "127.0.0.1:8081"],
    ));
    assert!(r.code == 0, "{r:?}");
    let r = run(mantissa(tmp.path(), &["--site", s, "port", "list"]));
    assert_eq!(r.stdout, "http   127.0.0.1:8081\n");
    // Issue 14, item 12: a port added twice is named, in words, not in the
    // store's ("another item already has this mantissa.port.protocol + ...").
    for again in ["127.0.0.1:8081", "127.000.0.1:8081"] {
        let r = run(mantissa(
            tmp.path(),
            &["--site", s, "port", "add", "http", again],
        ));
        if again == "127.0.0.1:8081" {
            assert_eq!(r.code, 1, "{r:?}");
            assert_eq!(
                r.stderr,
                "error: a port for http on 127.0.0.1:8081 exists already\n"
            );
        } else {
            // Not an address at all: refused as such.
            assert!(r.stderr.contains("is not an address"), "{r:?}");
        }
    }
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "port", "add", "http", "[::1]:8081"],
    ));
    assert_eq!(r.code, 0, "another address, another port: {r:?}");
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "port", "add", "http", "[0:0:0:0:0:0:0:1]:8081"],
    ));
    assert_eq!(
        r.stderr, "error: a port for http on [::1]:8081 exists already\n",
        "the same address, written otherwise"
    );
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "port", "remove", "http", "[::1]:8081"],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    // Every address of the machine and one of them, on one port: serve
    // could never listen on both.
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "port", "add", "http", "0.0.0.0:8081"],
    ));
    assert_eq!(
        r.stderr,
        "error: 0.0.0.0:8081 overlaps the port for http on 127.0.0.1:8081 (one of them listens on every address): remove that one first\n"
    );

    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "port", "add", "gopher", "127.0.0.1:70"],
    ));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("unknown protocol \"gopher\"; use one of: http, https"),
        "{r:?}"
    );
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "port", "add", "http", "localhost"],
    ));
    assert!(
        r.stderr
            .contains("\"localhost\" is not an address to listen on"),
        "{r:?}"
    );
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "port", "add", "https", "127.0.0.1:8443"],
    ));
    assert!(
        r.stderr.contains("https needs --cert FILE and --key FILE"),
        "{r:?}"
    );
    std::fs::write(tmp.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(tmp.path().join("key.pem"), "not a key").unwrap();
    let r = run(mantissa(
        tmp.path(),
        &[
            "--site",
            s,
            "port",
            "add",
            "https",
            "127.0.0.1:8443",
            "--cert",
            "cert.pem",
            "--key",
            "key.pem",
        ],
    ));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("cert.pem: holds no PEM certificate"),
        "{r:?}"
    );

    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "port", "remove", "http", "127.0.0.1:8081"],
    ));
    assert!(r.code == 0, "{r:?}");
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "port", "remove", "http", "127.0.0.1:8081"],
    ));
    assert!(r.stderr.contains("no http port on 127.0.0.1:8081"), "{r:?}");
}

#[test]
fn serve_says_clearly_when_its_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let r = run(mantissa(
        tmp.path(),
        &["serve", "--site", "s", "--listen", &addr],
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "cannot listen on {addr}: the address is already in use"
        )),
        "{r:?}"
    );
}

#[test]
fn site_settings_are_shown_changed_and_served() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("s");
    let s = site.to_str().unwrap();
    assert_eq!(run(mantissa(tmp.path(), &["init", s])).code, 0);
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "site", "set", "name", "Ada's <Site>"],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "site", "set", "theme", "nope"],
    ));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no theme folder"), "{r:?}");
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "site", "set", "colour", "red"],
    ));
    assert!(r.stderr.contains("unknown setting \"colour\""), "{r:?}");
    // Issue 13, item 20: the trusted proxies and who may read /metrics are
    // settings like the others, checked when set.
    let r = run(mantissa(
        tmp.path(),
        &[
            "--site",
            s,
            "site",
            "set",
            "trusted-proxies",
            "127.0.0.1, 10.0.0.0/33",
        ],
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("\"10.0.0.0/33\" is not an IP address"),
        "{r:?}"
    );
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "site", "set", "hsts-max-age", "a year"],
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("is not a number of seconds (0: no HSTS)"),
        "{r:?}"
    );
    for (key, value) in [
        ("trusted-proxies", "127.0.0.1, ::1"),
        ("metrics-from", "10.0.0.0/8"),
        ("hsts-max-age", "0"),
    ] {
        let r = run(mantissa(
            tmp.path(),
            &["--site", s, "site", "set", key, value],
        ));
        assert_eq!(r.code, 0, "{r:?}");
    }
    std::fs::write(
        tmp.path().join("robots.txt"),
        "User-agent: *\nDisallow: /\n",
    )
    .unwrap();
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "site", "set", "robots", "@robots.txt"],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(mantissa(tmp.path(), &["--site", s, "site", "show"]));
    assert!(r.stdout.starts_with("name         Ada's <Site>\n"), "{r:?}");
    assert!(
        r.stdout.contains("\ntrusted-proxies 127.0.0.1, ::1\n"),
        "{r:?}"
    );
    assert!(r.stdout.contains("\nmetrics-from 10.0.0.0/8\n"), "{r:?}");
    assert!(r.stdout.contains("\nhsts-max-age 0\n"), "{r:?}");
    assert!(
        r.stdout
            .ends_with("robots:\nUser-agent: *\nDisallow: /\n\n"),
        "{r:?}"
    );
    let r = run(mantissa(tmp.path(), &["--site", s, "store", "upgrade"]));
    assert_eq!(r.stdout, "Every store is up to date.\n");
}

#[test]
fn users_sign_up_and_mail_are_set_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("s");
    let s = site.to_str().unwrap();
    assert_eq!(run(mantissa(tmp.path(), &["init", s])).code, 0);
    let r = run(mantissa(
        tmp.path(),
        &[
            "--site",
            s,
            "user",
            "add",
            "ann",
            "--email",
            "ann@example.org",
        ],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("Created user ann.\nSet the password (the link works once, for 24 hours): http://127.0.0.1:8080/reset/"), "{r:?}");
    assert!(site.join("users/ann.sqlite").is_file());
    let r = run(mantissa(tmp.path(), &["--site", s, "user", "add", "ann"]));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("the user name ann is taken"), "{r:?}");
    let mut add = mantissa(
        tmp.path(),
        &[
            "--site",
            s,
            "user",
            "add",
            "bob",
            "--password-stdin",
            "--admin",
        ],
    );
    add.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = add.spawn().unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("password: use at least 10 characters"));

    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "signup", "set", "sometimes"],
    ));
    assert!(
        r.stderr
            .contains("\"sometimes\" is not a sign-up mechanism"),
        "{r:?}"
    );
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "signup", "set", "invitation"],
    ));
    assert_eq!(r.stdout, "Sign-up is now invitation.\n");
    let r = run(mantissa(tmp.path(), &["--site", s, "signup", "invite"]));
    assert!(
        r.stdout
            .starts_with("http://127.0.0.1:8080/signup?invitation="),
        "{r:?}"
    );

    let r = run(mantissa(
        tmp.path(),
        &[
            "--site",
            s,
            "mail",
            "set",
            "--from",
            "site@example.org",
            "--relay",
            "smtp.example.org",
        ],
    ));
    assert!(r.stderr.contains("is not HOST:PORT"), "{r:?}");
    let r = run(mantissa(
        tmp.path(),
        &[
            "--site",
            s,
            "mail",
            "set",
            "--from",
            "site@example.org",
            "--relay",
            "smtp.example.org:587",
        ],
    ));
    assert_eq!(
        r.stdout,
        "Mail from site@example.org goes through smtp.example.org:587.\n"
    );
    let r = run(mantissa(
        tmp.path(),
        &["--site", s, "mail", "set", "--relay", ""],
    ));
    assert!(
        r.stdout
            .starts_with("Mail from site@example.org is written to "),
        "{r:?}"
    );
}

/// Under the usual limit of 1,024 open files (here 512, soft and hard), a
/// server whose connections are held by clients that never finish a request
/// keeps answering: it fits its connection cap to the files it has, and
/// makes room when the cap is reached, instead of failing every accept once
/// the files run out.
#[cfg(unix)]
#[test]
fn serve_keeps_answering_when_held_connections_would_use_up_its_open_files() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new("bash")
        .current_dir(tmp.path())
        .args(["-c", "ulimit -n 512 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_mantissa"))
        .args(["serve", "--site", "s", "--listen", "127.0.0.1:0"])
        .env_remove("MANTISSA_SITE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let url = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "serve ended early");
        if let Some(url) = line.strip_prefix("Serving http://") {
            break url.trim_end().trim_end_matches('/').to_string();
        }
    };
    let addr: std::net::SocketAddr = url.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let held = rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut held = Vec::new();
        // 600 connections from 20 addresses (under the cap of 64 each),
        // each with half a request head.
        for i in 0..600 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(format!("127.0.9.{}:0", 1 + i % 20).parse().unwrap())
                .unwrap();
            let Ok(Ok(mut c)) =
                tokio::time::timeout(Duration::from_secs(2), socket.connect(addr)).await
            else {
                continue;
            };
            let _ = c.write_all(b"GET / HTTP/1.1\r\n").await;
            held.push(c);
        }
        held
    });
    assert!(held.len() > 500, "only {} connected", held.len());
    for _ in 0..5 {
        let start = Instant::now();
        let page = http_get(&url, "/");
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        let took = start.elapsed();
        assert!(took < Duration::from_secs(1), "a page took {took:?}");
    }
    drop(held);
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// `mantissa ARGS` with `input` on standard input.
fn run_with_input(mut cmd: Command, input: &str) -> Run {
    use std::io::Write as _;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code().expect("exited, not killed"),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// An account that signed up and waits for approval, written as sign-up
/// by approval writes it (the command line cannot make one).
fn pending_account(site: &Path, name: &str, email: &str, verified: bool) {
    use mantissa::accounts::model::status;
    use mantissa::accounts::{Account, EmailAddress};
    let site = Site::open_existing(site).unwrap();
    let (name, email) = (name.to_string(), email.to_string());
    site.store()
        .write_blocking(move |tx| {
            let account = tx.insert(&Account {
                username: name,
                status: status::PENDING.into(),
                password_hash: Some(mantissa::accounts::password::hash("pending-password")),
                admin: false,
                created: mantissa::store::Timestamp::now(),
                failed_logins: 0,
                locked: false,
                totp_secret: None,
                totp_enabled: false,
                totp_last_step: 0,
                joined_by: "approval".into(),
                product_installed: false,
            })?;
            tx.insert(&EmailAddress {
                address: email,
                account,
                verified,
            })
            .map(drop)
        })
        .unwrap();
}

/// What the log-in page would answer `who` with `password` (the same call
/// it makes), on the site in `dir`.
fn log_in(dir: &Path, who: &str, password: &str) -> Result<String, String> {
    let site = Site::open_existing(dir).unwrap();
    let accounts = mantissa::accounts::Accounts::new(
        site,
        std::sync::Arc::new(mantissa::mail::Outbox::new(dir.join("outbox"))),
        "site@example.org",
        "http://127.0.0.1:8080",
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(accounts.login(None, who, password))
        .map_err(|e| e.to_string())
}

/// The value of `label` in `mantissa user show`.
fn shown_field(r: &Run, label: &str) -> String {
    r.stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix(label)
                .filter(|rest| rest.starts_with(' '))
                .map(|rest| rest.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {label:?} in {r:?}"))
}

/// Issue 14, item 12: what the admin console does to accounts, the command
/// line does too — list, show, approve, suspend, unsuspend, delete (and
/// import back, account and all).
#[test]
fn users_are_listed_shown_approved_suspended_deleted_and_imported_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let s = dir.to_str().unwrap();
    let at = |args: &[&str]| {
        let mut all = vec!["--site", s];
        all.extend_from_slice(args);
        mantissa(tmp.path(), &all)
    };
    ok(at(&["init"]));
    let r = run_with_input(
        at(&[
            "user",
            "add",
            "ann",
            "--email",
            "ann@example.org",
            "--password-stdin",
        ]),
        "ann-password-1\n",
    );
    assert_eq!(r.code, 0, "{r:?}");
    ok(at(&["user", "add", "root", "--admin"]));
    pending_account(&dir, "pat", "pat@example.org", true);
    pending_account(&dir, "quin", "quin@example.org", false);

    let r = ok(at(&["user", "list"]));
    let rows: Vec<Vec<&str>> = r
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["user", "status", "role", "created", "email"],
        "{r:?}"
    );
    let today = &mantissa::store::Timestamp::now().to_string()[..10];
    assert_eq!(rows[1], ["ann", "active", "user", today, "ann@example.org"]);
    assert_eq!(
        rows[2],
        ["pat", "pending", "user", today, "pat@example.org"]
    );
    assert_eq!(
        rows[3],
        [
            "quin",
            "pending",
            "user",
            today,
            "quin@example.org",
            "(unverified)"
        ]
    );
    assert_eq!(rows[4], ["root", "active", "administrator", today, "-"]);
    assert_eq!(
        r.stdout.lines().last(),
        Some("4 users, 2 waiting for approval")
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(at(&["user", "list", "--json"])).stdout).unwrap();
    assert_eq!(json["users"][1]["username"], "pat");
    assert_eq!(json["users"][1]["status"], "pending");
    assert_eq!(json["users"][1]["emails"][0]["address"], "pat@example.org");

    // One account in full.
    let site = Site::open_existing(&dir).unwrap();
    mantissa::accounts::tokens::create(&site, "ann", "phone", false).unwrap();
    drop(site);
    let r = ok(at(&["user", "show", "ann"]));
    assert_eq!(shown_field(&r, "user name"), "ann");
    assert_eq!(shown_field(&r, "status"), "active");
    assert_eq!(shown_field(&r, "role"), "user");
    assert_eq!(shown_field(&r, "email"), "ann@example.org (verified)");
    assert_eq!(shown_field(&r, "password"), "set");
    assert_eq!(shown_field(&r, "two-factor"), "off");
    assert_eq!(shown_field(&r, "API tokens"), "1");
    assert!(
        shown_field(&r, "created").ends_with(" UTC, created by an administrator"),
        "{r:?}"
    );
    assert!(
        shown_field(&r, "store")
            .starts_with(&format!("{} (", dir.join("users/ann.sqlite").display())),
        "{r:?}"
    );
    let r = ok(at(&["user", "show", "root"]));
    assert_eq!(shown_field(&r, "role"), "administrator");
    assert_eq!(shown_field(&r, "password"), "not set");
    let r = run(at(&["user", "show", "zed"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr, "error: there is no user called \"zed\"\n");
    let r = run(at(&["user", "show", "Ann"]));
    assert_eq!(r.code, 2, "a usage error: {r:?}");
    assert!(
        r.stderr
            .contains("\"Ann\" cannot be a user name: use only lowercase letters"),
        "{r:?}"
    );

    // Approval: active with a verified address, else once it is verified.
    assert_eq!(
        log_in(&dir, "pat", "pending-password").unwrap_err(),
        "your sign-up is waiting for an administrator's approval"
    );
    let r = ok(at(&["user", "approve", "pat"]));
    assert_eq!(r.stdout, "Approved pat; they can log in.\n");
    assert_eq!(log_in(&dir, "pat", "pending-password"), Ok("pat".into()));
    let r = ok(at(&["user", "approve", "quin"]));
    assert_eq!(
        r.stdout,
        "Approved quin; the account works once its email address is verified.\n"
    );
    assert_eq!(
        shown_field(&ok(at(&["user", "show", "quin"])), "status"),
        "unverified"
    );
    let r = run(at(&["user", "approve", "ann"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        "error: ann is not waiting for approval (the account is active)\n"
    );

    // Suspension: no log-in, API tokens revoked for good.
    let r = ok(at(&["user", "suspend", "ann"]));
    assert_eq!(
        r.stdout,
        "Suspended ann: they cannot log in, their sessions ended, and their API tokens are revoked.\n"
    );
    assert_eq!(
        log_in(&dir, "ann", "ann-password-1").unwrap_err(),
        "this account is suspended"
    );
    let r = run(at(&["user", "suspend", "ann"]));
    assert_eq!(r.stderr, "error: ann is suspended already\n");
    let r = ok(at(&["user", "unsuspend", "ann"]));
    assert!(r.stdout.starts_with("ann can log in again"), "{r:?}");
    assert_eq!(log_in(&dir, "ann", "ann-password-1"), Ok("ann".into()));
    assert_eq!(
        shown_field(&ok(at(&["user", "show", "ann"])), "API tokens"),
        "0"
    );
    let r = run(at(&["user", "unsuspend", "ann"]));
    assert_eq!(
        r.stderr,
        "error: ann is not suspended (the account is active)\n"
    );

    // Deletion asks first; off a terminal, --yes is the answer.
    let r = run(at(&["user", "delete", "ann"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("add --yes"), "{r:?}");
    assert!(dir.join("users/ann.sqlite").is_file(), "not deleted");
    let r = ok(at(&["user", "delete", "ann", "--yes"]));
    let export = r
        .stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Deleted user ann; their store was exported first to "))
        .unwrap_or_else(|| panic!("{r:?}"))
        .to_string();
    assert!(Path::new(&export).is_file(), "{r:?}");
    // The command that undoes it, runnable as it is (the binary is not on
    // the tests' PATH: named by its path).
    assert_eq!(
        r.stdout.lines().nth(1).unwrap(),
        format!(
            "Bring it back with: {} user import ann {export}",
            std::fs::canonicalize(env!("CARGO_BIN_EXE_mantissa"))
                .unwrap()
                .display()
        )
    );
    assert!(!dir.join("users/ann.sqlite").exists());
    assert!(log_in(&dir, "ann", "ann-password-1").is_err());
    assert!(!ok(at(&["user", "list"])).stdout.contains("ann"));
    let r = run(at(&["user", "delete", "zed", "--yes"]));
    assert_eq!(r.stderr, "error: there is no user called \"zed\"\n");

    // Imported back, the store gets an account again, with a link for its
    // password (the export held no account: that is the site store's).
    let r = ok(at(&[
        "user",
        "import",
        "ann",
        &export,
        "--email",
        "ann@example.org",
    ]));
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].contains(" as user ann ("), "{r:?}");
    assert!(
        lines[1].starts_with("Created the account ann; set its password (the link works once, for 24 hours): http://127.0.0.1:8080/reset/"),
        "{r:?}"
    );
    let r = ok(at(&["user", "show", "ann"]));
    assert_eq!(shown_field(&r, "status"), "active");
    assert_eq!(shown_field(&r, "email"), "ann@example.org (verified)");
    assert_eq!(shown_field(&r, "password"), "not set");

    // An import whose account cannot be made leaves no store behind.
    let r = run(at(&[
        "user",
        "import",
        "carl",
        &export,
        "--email",
        "pat@example.org",
    ]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("no store was created")
            && r.stderr
                .contains("pat@example.org belongs to another account"),
        "{r:?}"
    );
    assert!(!dir.join("users/carl.sqlite").exists());
    ok(at(&["store", "check"]));
}

/// `mantissa user passwd`: from standard input, or a one-time link.
#[test]
fn passwords_are_set_from_standard_input_or_with_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let s = dir.to_str().unwrap();
    let at = |args: &[&str]| {
        let mut all = vec!["--site", s];
        all.extend_from_slice(args);
        mantissa(tmp.path(), &all)
    };
    ok(at(&["init"]));
    ok(at(&["user", "add", "ann", "--email", "ann@example.org"]));
    assert!(log_in(&dir, "ann", "a-new-password").is_err());

    let r = run_with_input(at(&["user", "passwd", "ann"]), "a-new-password\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        "Set the password of ann; their sessions and outstanding links have ended.\n"
    );
    assert_eq!(r.stderr, "", "no log lines for what the command says");
    assert_eq!(log_in(&dir, "ann", "a-new-password"), Ok("ann".into()));

    let r = run_with_input(at(&["user", "passwd", "ann"]), "short\n");
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr, "error: password: use at least 10 characters\n");
    assert_eq!(log_in(&dir, "ann", "a-new-password"), Ok("ann".into()));
    let r = run_with_input(at(&["user", "passwd", "zed"]), "a-new-password\n");
    assert_eq!(r.stderr, "error: there is no user called \"zed\"\n");

    let r = ok(at(&["user", "passwd", "ann", "--link"]));
    let token = r
        .stdout
        .strip_prefix("Set the password of ann (the link works once, for 24 hours): http://127.0.0.1:8080/reset/")
        .unwrap_or_else(|| panic!("{r:?}"))
        .trim_end()
        .to_string();
    let site = Site::open_existing(&dir).unwrap();
    let accounts = mantissa::accounts::Accounts::new(
        site,
        std::sync::Arc::new(mantissa::mail::Outbox::new(dir.join("outbox"))),
        "site@example.org",
        "http://127.0.0.1:8080",
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(accounts.reset(&token, "a-linked-password"))
            .unwrap(),
        "ann"
    );
    drop(accounts);
    assert_eq!(log_in(&dir, "ann", "a-linked-password"), Ok("ann".into()));
}

/// On a terminal, `user passwd` asks twice, and what is typed is not shown.
#[cfg(target_os = "linux")]
#[test]
fn passwd_on_a_terminal_asks_twice_without_showing_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let s = dir.to_str().unwrap();
    ok(mantissa(tmp.path(), &["init", s]));
    ok(mantissa(tmp.path(), &["--site", s, "user", "add", "ann"]));
    // `script` gives the command a terminal; the input comes slowly, as
    // typed, once each prompt has turned echo off.
    let typed = format!(
        "(sleep 1; printf 'typed-secret-1\\n'; sleep 1; printf 'typed-secret-1\\n') | script -qec '{} --site {s} user passwd ann' /dev/null",
        env!("CARGO_BIN_EXE_mantissa")
    );
    let r = run({
        let mut c = Command::new("sh");
        c.args(["-c", &typed])
            .current_dir(tmp.path())
            .env("XDG_DATA_HOME", tmp.path().join("xdg-data"))
            .env_remove("MANTISSA_LOG")
            .stdin(Stdio::null());
        c
    });
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("New password for ann: ")
            && r.stdout.contains("The same again: ")
            && r.stdout.contains("Set the password of ann;"),
        "{r:?}"
    );
    assert!(!r.stdout.contains("typed-secret"), "echoed: {r:?}");
    assert_eq!(log_in(&dir, "ann", "typed-secret-1"), Ok("ann".into()));
}

/// On a terminal, `user delete` asks for the user name to be typed back,
/// and deletes nothing on any other answer.
#[cfg(target_os = "linux")]
#[test]
fn delete_on_a_terminal_asks_for_the_name_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let s = dir.to_str().unwrap();
    ok(mantissa(tmp.path(), &["init", s]));
    ok(mantissa(tmp.path(), &["--site", s, "user", "add", "bob"]));
    let answer = |typed: &str| {
        let line = format!(
            "(sleep 1; printf '{typed}\\n') | script -qec '{} --site {s} user delete bob' /dev/null",
            env!("CARGO_BIN_EXE_mantissa")
        );
        let mut c = Command::new("sh");
        c.args(["-c", &line])
            .current_dir(tmp.path())
            .env("XDG_DATA_HOME", tmp.path().join("xdg-data"))
            .env_remove("MANTISSA_LOG")
            .stdin(Stdio::null());
        run(c)
    };
    let r = answer("yes");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("Delete the account bob and its store")
            && r.stdout.contains("Type its user name to confirm: ")
            && r.stdout
                .contains("not deleted: the name typed was not \"bob\""),
        "{r:?}"
    );
    assert!(dir.join("users/bob.sqlite").is_file(), "{r:?}");
    let r = answer("bob");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Deleted user bob;"), "{r:?}");
    assert!(!dir.join("users/bob.sqlite").exists(), "{r:?}");
}

/// `mantissa mail bounce FILE`: a real Exim bounce (from the parser's
/// sample table) read as JSON, without any site; a file that is not mail
/// is refused, naming the file and what is wrong.
#[test]
fn mail_bounce_prints_what_a_bounce_says() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mantissa-mail-proto/tests/samples/sisimai/lhost-exim-02.eml");
    let r = ok(mantissa(
        dir.path(),
        &["mail", "bounce", sample.to_str().unwrap()],
    ));
    let json: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(json["kind"], "bounce");
    let recipients = json["recipients"].as_array().unwrap();
    let addresses: Vec<&str> = recipients
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["kijitora@example.jp", "sabatora@example.jp"]);
    for r in recipients {
        assert_eq!(r["severity"], "permanent");
        assert_eq!(r["reason"], "unknown_user");
    }
    assert_eq!(recipients[0]["status"], "5.1.1");
    assert!(json["original_message_id"].is_string(), "{json}");
    assert!(!dir.path().join("xdg-data").exists(), "no site was made");

    let not_mail = dir.path().join("photo.eml");
    std::fs::write(&not_mail, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let r = run(mantissa(
        dir.path(),
        &["mail", "bounce", not_mail.to_str().unwrap()],
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    assert!(
        r.stderr.contains("photo.eml is not a mail message"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("the first line is not a header field"),
        "{r:?}"
    );

    let r = run(mantissa(dir.path(), &["mail", "bounce", "missing.eml"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("cannot read missing.eml"), "{r:?}");
}

/// One HTTP/1.1 request to `addr` with a cookie header; the whole answer.
fn http_request(addr: &str, method: &str, path: &str, cookie: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    s
}

/// Asks for a password reset for `email` through the site's /reset form,
/// as a browser does (the form's cookie and CSRF token, then the post).
fn ask_for_a_reset(addr: &str, email: &str) {
    let page = http_request(addr, "GET", "/reset", "", "");
    let cookie = page
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            k.eq_ignore_ascii_case("set-cookie")
                .then(|| v.split(';').next().unwrap().to_string())
        })
        .collect::<Vec<_>>()
        .join("; ");
    let token = page
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap_or_else(|| panic!("no form on /reset: {page}"));
    let body = format!("csrf_token={token}&email={}", email.replace('@', "%40"));
    let r = http_request(addr, "POST", "/reset", &cookie, &body);
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
}

/// Stops `mantissa serve` with SIGTERM, as a service manager does; it must
/// exit 0 (a graceful shutdown).
fn stop_gracefully(server: &mut std::process::Child) {
    let stopped = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert_eq!(server.wait().unwrap().code(), Some(0));
}

/// `mantissa serve` on a free port; returns the child and its address.
fn serve(cwd: &Path, site: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = mantissa(cwd, &["serve", "--site", site, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut addr = None;
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(a) = line.strip_prefix("Serving http://") {
            addr = Some(a.trim_end().trim_end_matches('/').to_string());
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    // Keep reading, so that the server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (child, addr.expect("serve says where it serves"))
}

/// `mantissa mail queue --all --json`, parsed.
fn queue_json(cwd: &Path, site: &str) -> Vec<serde_json::Value> {
    let r = ok(mantissa(
        cwd,
        &["--site", site, "mail", "queue", "--all", "--json"],
    ));
    serde_json::from_str::<Vec<serde_json::Value>>(&r.stdout)
        .unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

/// Waits (up to 20 s) until `done` holds of the queue.
fn wait_for_queue(
    cwd: &Path,
    site: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let start = std::time::Instant::now();
    loop {
        let q = queue_json(cwd, site);
        if done(&q) || start.elapsed() > std::time::Duration::from_secs(20) {
            return q;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Issue 16, item 3: a message the site accepted (the reset page answered)
/// is in the site store before it is delivered, survives `kill -9` of the
/// server, and is delivered once the server runs again.
#[cfg(unix)]
#[test]
fn mail_accepted_survives_kill_9_and_is_delivered_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    ok(mantissa(cwd, &["init", "s"]));
    // The relay is down at first: nothing listens on its port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = closed.local_addr().unwrap().to_string();
    drop(closed);
    let r = ok(mantissa(
        cwd,
        &[
            "--site",
            "s",
            "mail",
            "set",
            "--from",
            "site@example.org",
            "--relay",
            &down,
            "--first-retry",
            "1s",
        ],
    ));
    assert!(
        r.stdout.contains("retried for 5d, first after 1s."),
        "{r:?}"
    );
    ok(mantissa(
        cwd,
        &[
            "--site",
            "s",
            "user",
            "add",
            "ann",
            "--email",
            "ann@example.org",
        ],
    ));
    let (mut server, addr) = serve(cwd, "s");
    ask_for_a_reset(&addr, "ann@example.org");
    // Queued, tried, and waiting for the relay.
    let q = wait_for_queue(cwd, "s", |q| {
        q.len() == 1 && q[0]["attempts"].as_i64() >= Some(1)
    });
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["to"], serde_json::json!(["ann@example.org"]));
    assert_eq!(q[0]["state"], "queued", "{q:?}");
    assert!(
        q[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("connecting to the relay"),
        "{q:?}"
    );
    let killed = Command::new("kill")
        .args(["-KILL", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = server.wait();
    // The relay is up now.
    let sink = mantissa::testing::SmtpSink::start();
    ok(mantissa(
        cwd,
        &[
            "--site",
            "s",
            "mail",
            "set",
            "--relay",
            &sink.addr.to_string(),
        ],
    ));
    let q = queue_json(cwd, "s");
    assert_eq!(q.len(), 1, "still queued after kill -9: {q:?}");
    assert!(sink.messages().is_empty());
    let (mut server, _) = serve(cwd, "s");
    let got = sink.wait_for_within(1, std::time::Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to, ["ann@example.org"]);
    assert!(got[0].data.contains("/reset/"), "{}", got[0].data);
    let q = wait_for_queue(cwd, "s", |q| q[0]["state"] == "delivered");
    assert_eq!(q[0]["state"], "delivered", "{q:?}");
    assert!(q[0]["attempts"].as_i64().unwrap() >= 2, "{q:?}");
    assert!(q[0]["finished_at"].is_string(), "{q:?}");
    stop_gracefully(&mut server);
    assert_eq!(sink.messages().len(), 1, "delivered once");
}

/// Issue 16, item 5: `mantissa mail queue` lists what failed and why,
/// retries and drops; command-line actions that mail deliver at once.
#[test]
fn the_mail_queue_is_listed_retried_and_dropped_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    ok(mantissa(cwd, &["init", "s"]));
    let sink = mantissa::testing::SmtpSink::start();
    sink.answer_next([550]);
    ok(mantissa(
        cwd,
        &[
            "--site",
            "s",
            "mail",
            "set",
            "--from",
            "site@example.org",
            "--relay",
            &sink.addr.to_string(),
        ],
    ));
    let r = ok(mantissa(cwd, &["--site", "s", "mail", "queue"]));
    assert_eq!(r.stdout, "No mail is waiting or failed.\n");
    // Approving mails the person: the relay refuses it for good.
    pending_account(&cwd.join("s"), "pat", "pat@example.org", true);
    ok(mantissa(cwd, &["--site", "s", "user", "approve", "pat"]));
    let r = ok(mantissa(cwd, &["--site", "s", "mail", "queue"]));
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{r:?}");
    assert!(
        lines[0].contains("state") && lines[0].contains("last error"),
        "{r:?}"
    );
    for part in ["failed", "pat@example.org", "550 refused as told"] {
        assert!(lines[1].contains(part), "{part}: {r:?}");
    }
    let q = queue_json(cwd, "s");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["state"], "failed");
    assert_eq!(q[0]["attempts"], 1);
    assert_eq!(q[0]["last_error"], "550 refused as told");
    assert!(q[0]["next_try"].is_null());
    let id = q[0]["id"].as_i64().unwrap().to_string();
    // Retried: due now, its retries start again.
    let r = ok(mantissa(
        cwd,
        &["--site", "s", "mail", "queue", "retry", &id],
    ));
    assert_eq!(r.stdout, format!("Message {id} will be tried again now.\n"));
    assert_eq!(queue_json(cwd, "s")[0]["state"], "queued");
    let r = ok(mantissa(
        cwd,
        &["--site", "s", "mail", "queue", "retry", "--all"],
    ));
    assert_eq!(r.stdout, "1 message(s) will be tried again now.\n");
    // Unknown ids and missing arguments are refused, naming what is wrong.
    let r = run(mantissa(
        cwd,
        &["--site", "s", "mail", "queue", "retry", "999"],
    ));
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("no message 999 in the mail queue"),
        "{r:?}"
    );
    let r = run(mantissa(cwd, &["--site", "s", "mail", "queue", "retry"]));
    assert_eq!(r.code, 2, "{r:?}");
    // Dropped: gone, and not sent.
    let r = ok(mantissa(
        cwd,
        &["--site", "s", "mail", "queue", "drop", &id],
    ));
    assert_eq!(
        r.stdout,
        format!("Dropped message {id}; it will not be sent.\n")
    );
    assert!(queue_json(cwd, "s").is_empty());
    let r = run(mantissa(
        cwd,
        &["--site", "s", "mail", "queue", "drop", &id],
    ));
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains(&format!("no message {id} in the mail queue")),
        "{r:?}"
    );
    // Another approval's mail goes at once, and is listed as history only
    // with --all.
    pending_account(&cwd.join("s"), "quinn", "quinn@example.org", true);
    ok(mantissa(cwd, &["--site", "s", "user", "approve", "quinn"]));
    let got = sink.wait_for(1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to, ["quinn@example.org"]);
    let r = ok(mantissa(cwd, &["--site", "s", "mail", "queue"]));
    assert_eq!(r.stdout, "No mail is waiting or failed.\n");
    let q = queue_json(cwd, "s");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["state"], "delivered");
    // A bad duration changes nothing.
    let r = run(mantissa(
        cwd,
        &["--site", "s", "mail", "set", "--retry-for", "5 days"],
    ));
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("--retry-for \"5 days\" is not a duration"),
        "{r:?}"
    );
}

/// Issue 16, item 4: `mantissa mail dkim generate` makes a key for the
/// sender's domain and prints the record to publish; mail the site sends
/// from then on reaches the relay signed, verifying against that record
/// (dkimpy); a second key is refused unless told to replace the first.
#[test]
fn mail_dkim_generate_prints_the_record_and_the_site_s_mail_verifies_against_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    ok(mantissa(cwd, &["init", "s"]));
    let r = run(mantissa(cwd, &["--site", "s", "mail", "dkim", "generate"]));
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("mail set --from"), "{r:?}");
    let r = ok(mantissa(cwd, &["--site", "s", "mail", "dkim", "show"]));
    assert!(r.stdout.contains("mail goes out unsigned"), "{r:?}");
    let sink = mantissa::testing::SmtpSink::start();
    let relay = sink.addr.to_string();
    ok(mantissa(
        cwd,
        &[
            "--site",
            "s",
            "mail",
            "set",
            "--from",
            "site@example.org",
            "--relay",
            &relay,
        ],
    ));
    let r = ok(mantissa(
        cwd,
        &[
            "--site",
            "s",
            "mail",
            "dkim",
            "generate",
            "--selector",
            "s1",
        ],
    ));
    assert!(
        r.stdout.contains("mail from example.org is signed"),
        "{r:?}"
    );
    assert!(r.stdout.contains("s1._domainkey.example.org"), "{r:?}");
    let again = run(mantissa(
        cwd,
        &[
            "--site",
            "s",
            "mail",
            "dkim",
            "generate",
            "--selector",
            "s2",
        ],
    ));
    assert_ne!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("--replace"), "{again:?}");
    // The record as a zone file holds it: the quoted strings joined.
    let record: String = r
        .stdout
        .lines()
        .find(|l| l.contains("IN TXT"))
        .expect("a TXT line")
        .split('"')
        .skip(1)
        .step_by(2)
        .collect();
    assert!(record.starts_with("v=DKIM1; k=rsa; p="), "{record}");
    // Approving mails the person, at once, through the relay.
    pending_account(&cwd.join("s"), "pat", "pat@example.org", true);
    ok(mantissa(cwd, &["--site", "s", "user", "approve", "pat"]));
    let got = sink.wait_for(1);
    assert!(
        got[0].data.starts_with("DKIM-Signature:"),
        "{}",
        got[0].data
    );
    assert!(mantissa::testing::dkim_verifies(
        &got[0].data,
        "s1._domainkey.example.org",
        &record
    ));
}

/// Issue 16, items 4 and 7: the site's mail goes out with a VERP return
/// path, and `mantissa mail bounce --apply` (what a mail server pipes the
/// return path's mail into) marks the address a real Postfix bounce names
/// failing; a bounce to a return path the site never gave changes nothing.
#[test]
fn mail_bounce_apply_marks_the_address_a_bounce_to_a_return_path_names() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    ok(mantissa(cwd, &["init", "s"]));
    let sink = mantissa::testing::SmtpSink::start();
    let relay = sink.addr.to_string();
    ok(mantissa(
        cwd,
        &[
            "--site",
            "s",
            "mail",
            "set",
            "--from",
            "site@example.org",
            "--relay",
            &relay,
        ],
    ));
    // The address a Postfix sample bounce (unknown user) names.
    pending_account(&cwd.join("s"), "kij", "kijitora@example.co.jp", true);
    ok(mantissa(cwd, &["--site", "s", "user", "approve", "kij"]));
    let got = sink.wait_for(1);
    let path = got[0].from.clone();
    assert!(
        path.starts_with("bounces+") && path.ends_with(".kijitora=example.co.jp@example.org"),
        "{path}"
    );
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../mantissa-mail-proto/tests/samples/sisimai/lhost-postfix-04.eml"
    );
    // Without --apply it only reads; with it, the address is marked.
    let r = ok(mantissa(cwd, &["--site", "s", "mail", "bounce", sample]));
    assert!(r.stdout.contains("\"unknown_user\""), "{r:?}");
    let forged = path.replacen("bounces+", "bounces+x", 1);
    let r = ok(mantissa(
        cwd,
        &[
            "--site", "s", "mail", "bounce", "--apply", "--to", &forged, sample,
        ],
    ));
    assert!(r.stdout.starts_with("Nothing changed:"), "{r:?}");
    let mut cmd = mantissa(
        cwd,
        &[
            "--site", "s", "mail", "bounce", "--apply", "--to", &path, "-",
        ],
    );
    cmd.stdin(std::fs::File::open(sample).unwrap());
    let r = ok(cmd);
    assert!(
        r.stdout
            .starts_with("kijitora@example.co.jp is failing (unknown_user"),
        "{r:?}"
    );
}

/// `mantissa serve` with the site's own ports (none given on the command
/// line); returns the child, what it printed up to "Press Ctrl-C".
fn serve_ports(cwd: &Path, site: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = mantissa(cwd, &["serve", "--site", site])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut said = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        said.push_str(&line);
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (child, said)
}

/// Issue 16, item 9 (in part) and 10: `port add smtp` makes `serve` receive
/// mail, as a real client (Python's smtplib) sends it: a message to an
/// account's address lands in that person's store with its raw bytes;
/// unknown people and other domains are refused at RCPT (no relaying), too
/// many unknown ones end the session; a bounce to one of the site's return
/// paths goes to the bounce processing, not to anybody.
#[test]
fn serve_receives_mail_for_its_accounts_over_smtp() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    ok(mantissa(cwd, &["init", "s"]));
    let at = |args: &[&str]| {
        let mut all = vec!["--site", "s"];
        all.extend_from_slice(args);
        mantissa(cwd, &all)
    };
    ok(at(&["mail", "set", "--from", "site@example.org"]));
    ok(at(&["user", "add", "ann", "--email", "ann@example.net"]));
    let r = run(at(&["port", "add", "smtp", "not-an-address"]));
    assert_ne!(r.code, 0, "{r:?}");
    ok(at(&["port", "add", "smtp", "127.0.0.1:0"]));
    let (mut server, said) = serve_ports(cwd, "s");
    let smtp = said
        .lines()
        .find_map(|l| l.strip_prefix("Mail on smtp://"))
        .unwrap_or_else(|| panic!("serve says where it receives mail: {said}"))
        .trim()
        .to_string();
    let (host, port) = smtp.rsplit_once(':').unwrap();
    const CLIENT: &str = r#"
import json, smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])
out = {}
msg = ("From: Bob <bob@example.net>\r\nTo: ann@example.org\r\nSubject: Lunch?\r\n"
       "Message-ID: <lunch-1@example.net>\r\n\r\nShall we?\r\n.leading dot kept\r\n")
with smtplib.SMTP(host, port, timeout=10) as s:
    out["ehlo"] = s.ehlo()[0]
    refused = s.sendmail("bob@example.net", ["ANN@example.org", "nobody@example.org"], msg)
    out["refused"] = {k: [code, text.decode()] for k, (code, text) in refused.items()}
    for to in ["ann@elsewhere.example"]:
        try:
            s.sendmail("bob@example.net", [to], msg)
            out[to] = "accepted"
        except smtplib.SMTPRecipientsRefused as e:
            out[to] = e.recipients[to][0]
    out["syntax"] = s.docmd("MAIL", "FROM:<<<>>>")[0]
    s.rset()
    out["vrfy"] = s.verify("ann@example.org")[0]
    # The postmaster (RFC 5321) is the administrator.
    out["postmaster"] = s.sendmail("bob@example.net", ["Postmaster@example.org"], msg)
    # A DMARC aggregate report, as Google sends them.
    report = open(sys.argv[3], "rb").read()
    out["dmarc"] = s.sendmail("noreply-dmarc-support@google.com", ["dmarc-reports@example.org"], report)
# Guessing names: the session ends after a few unknown ones.
codes = []
with smtplib.SMTP(host, port, timeout=10) as s:
    s.ehlo()
    s.mail("x@example.net")
    try:
        for i in range(10):
            codes.append(s.rcpt(f"guess{i}@example.org")[0])
    except smtplib.SMTPServerDisconnected:
        codes.append("closed")
out["guesses"] = codes
print(json.dumps(out))
"#;
    let report = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../mantissa-mail/tests/dmarc/google.eml"
    );
    let r = ok(at(&["mail", "dmarc"]));
    assert!(
        r.stdout.contains("rua=mailto:dmarc-reports@example.org"),
        "{r:?}"
    );
    let client = Command::new("python3")
        .args(["-c", CLIENT, host, port, report])
        .output()
        .unwrap();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&client.stdout).unwrap();
    // swaks, as an operator tries a mail server.
    let swaks = Command::new("swaks")
        .args([
            "--server",
            &smtp,
            "--from",
            "bob@example.net",
            "--to",
            "ann@example.org",
        ])
        .args(["--header", "Subject: via swaks", "--body", "Testing."])
        .output()
        .expect("swaks runs (.ci/test installs it)");
    assert!(
        swaks.status.success(),
        "{}",
        String::from_utf8_lossy(&swaks.stdout)
    );
    assert_eq!(out["dmarc"], serde_json::json!({}), "{out}");
    assert_eq!(out["postmaster"], serde_json::json!({}), "{out}");
    assert_eq!(out["ehlo"], 250, "{out}");
    assert_eq!(out["refused"]["nobody@example.org"][0], 550, "{out}");
    assert!(out["refused"].get("ANN@example.org").is_none(), "{out}");
    assert_eq!(out["ann@elsewhere.example"], 550, "no relaying: {out}");
    assert_eq!(out["syntax"], 501, "{out}");
    assert_eq!(out["vrfy"], 252, "VRFY tells nothing: {out}");
    let guesses = out["guesses"].as_array().unwrap();
    let answered = guesses.iter().filter(|c| **c == 550).count();
    assert!(answered <= 3, "{out}");
    assert!(guesses.contains(&serde_json::json!(421)), "{out}");
    assert_eq!(guesses.last().unwrap(), "closed", "{out}");
    stop_gracefully(&mut server);
    // In ann's store: the message, and its raw bytes as its file.
    let site = Site::open_existing(cwd.join("s")).unwrap();
    let ann = site.user_store("ann").unwrap();
    let got = ann
        .read_blocking(|r| {
            let all = r.query::<mantissa::mail::inbound::InboundMail>().all()?;
            let raw = match all.first() {
                Some(m) => r.file(m.id(), mantissa::mail::inbound::RAW_FILE)?,
                None => None,
            };
            Ok::<_, mantissa::store::StoreError>((all, raw))
        })
        .unwrap();
    let (mail, raw) = got;
    assert_eq!(mail.len(), 2, "smtplib's and swaks's: {mail:?}");
    assert!(mail.iter().any(|m| m.subject == "via swaks"), "{mail:?}");
    let m = &mail[0];
    assert_eq!(m.subject, "Lunch?");
    assert_eq!(m.from, "Bob <bob@example.net>");
    assert_eq!(m.envelope_from, "bob@example.net");
    assert_eq!(m.message_id.as_deref(), Some("lunch-1@example.net"));
    assert!(m.text.contains("Shall we?"), "{m:?}");
    let raw = String::from_utf8(raw.expect("the raw message")).unwrap();
    assert!(
        raw.contains("\r\n.leading dot kept\r\n"),
        "dot-unstuffed: {raw}"
    );
    assert_eq!(raw.len() as i64, m.size);
    // What the server found of the sender is on the message and first in
    // it (no DNS here: SPF and DMARC could not say much; no signature).
    assert!(
        raw.starts_with("Authentication-Results: example.org;"),
        "{raw}"
    );
    assert_eq!(m.dkim, "none", "{m:?}");
    assert!(!m.spf.is_empty() && !m.dmarc.is_empty(), "{m:?}");
    let to_admin = site
        .user_store("admin")
        .unwrap()
        .read_blocking(|r| r.query::<mantissa::mail::inbound::InboundMail>().count())
        .unwrap();
    assert_eq!(to_admin, 1, "the postmaster's mail is the administrator's");
    drop(site);
    // Nobody may take the site's own addresses as a user name.
    let r = run(at(&["user", "add", "postmaster"]));
    assert!(r.stderr.contains("kept for the site's own mail"), "{r:?}");
    let r = ok(at(&["mail", "dmarc"]));
    assert!(
        r.stdout
            .contains("stalw.art  google.com: 1 of 1 messages passed DMARC"),
        "{r:?}"
    );
}

/// Issue 16, item 9: `port add submission ADDR --cert --key` lets the
/// site's people send through it, as a mail program does (Python's
/// smtplib): STARTTLS, then AUTH PLAIN with their web password, then mail
/// as USER@domain to anyone, which leaves through the site's queue and
/// relay; nothing before TLS and a log-in, a wrong password refused, and
/// sending as someone else refused.
#[test]
fn the_site_s_people_send_through_the_submission_port() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    ok(mantissa(cwd, &["init", "s"]));
    let at = |args: &[&str]| {
        let mut all = vec!["--site", "s"];
        all.extend_from_slice(args);
        mantissa(cwd, &all)
    };
    let sink = mantissa::testing::SmtpSink::start();
    let relay = sink.addr.to_string();
    ok(at(&[
        "mail",
        "set",
        "--from",
        "site@example.org",
        "--relay",
        &relay,
    ]));
    let mut add = at(&[
        "user",
        "add",
        "ann",
        "--email",
        "ann@example.net",
        "--password-stdin",
    ]);
    add.stdin(Stdio::piped());
    let mut child = add.stdout(Stdio::null()).spawn().unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"correct horse battery staple\n",
    )
    .unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (cwd.join("cert.pem"), cwd.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let r = run(at(&["port", "add", "submission", "127.0.0.1:0"]));
    assert!(
        r.stderr.contains("needs --cert FILE and --key FILE"),
        "{r:?}"
    );
    ok(at(&[
        "port",
        "add",
        "submission",
        "127.0.0.1:0",
        "--cert",
        cert_path.to_str().unwrap(),
        "--key",
        key_path.to_str().unwrap(),
    ]));
    let (mut server, said) = serve_ports(cwd, "s");
    let addr = said
        .lines()
        .find_map(|l| l.strip_prefix("Mail on submission://"))
        .unwrap_or_else(|| panic!("serve says where: {said}"))
        .trim()
        .to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();
    const CLIENT: &str = r#"
import base64, json, smtplib, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
plain = lambda u, p: base64.b64encode(f"\0{u}\0{p}".encode()).decode()
msg = "From: ann@example.org\r\nTo: carol@example.net\r\nSubject: Hello Carol\r\n\r\nSent from my mail program.\r\n"
out = {}
with smtplib.SMTP(host, port, timeout=10) as s:
    out["ehlo_clear"] = s.ehlo()[1].decode()
    out["auth_clear"] = s.docmd("AUTH", "PLAIN " + plain("ann", "correct horse battery staple"))[0]
    out["mail_clear"] = s.docmd("MAIL", "FROM:<ann@example.org>")[0]
    s.starttls(context=ctx)
    out["ehlo_tls"] = s.ehlo()[1].decode()
    out["mail_anonymous"] = s.docmd("MAIL", "FROM:<ann@example.org>")[0]
    try:
        s.login("ann", "wrong password")
    except smtplib.SMTPAuthenticationError as e:
        out["wrong"] = e.smtp_code
    s.login("ann", "correct horse battery staple")
    try:
        s.sendmail("bob@example.org", ["carol@example.net"], msg)
    except smtplib.SMTPDataError as e:
        out["spoof"] = e.smtp_code
    out["sent"] = s.sendmail("ann@example.org", ["carol@example.net"], msg)
print(json.dumps(out))
"#;
    let client = Command::new("python3")
        .args(["-c", CLIENT, host, port])
        .output()
        .unwrap();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&client.stdout).unwrap();
    let clear = out["ehlo_clear"].as_str().unwrap();
    assert!(
        clear.contains("STARTTLS") && !clear.contains("AUTH"),
        "{out}"
    );
    assert_eq!(out["auth_clear"], 530, "{out}");
    assert_eq!(out["mail_clear"], 530, "{out}");
    let tls = out["ehlo_tls"].as_str().unwrap();
    assert!(
        tls.contains("AUTH PLAIN") && !tls.contains("STARTTLS"),
        "{out}"
    );
    assert_eq!(out["mail_anonymous"], 530, "{out}");
    assert_eq!(out["wrong"], 535, "{out}");
    assert_eq!(out["spoof"], 550, "{out}");
    assert_eq!(out["sent"], serde_json::json!({}), "{out}");
    // swaks, as an operator tries a submission port.
    let swaks = Command::new("swaks")
        .args([
            "--server",
            &addr,
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "ann",
        ])
        .args(["--auth-password", "correct horse battery staple"])
        .args(["--from", "ann@example.org", "--to", "dave@example.net"])
        .args(["--header", "Subject: via swaks"])
        .output()
        .expect("swaks runs (.ci/test installs it)");
    assert!(
        swaks.status.success(),
        "{}",
        String::from_utf8_lossy(&swaks.stdout)
    );
    // Out through the queue and the relay, with the site's return path.
    let got = sink.wait_for_within(2, std::time::Duration::from_secs(20));
    let got: Vec<_> = {
        let mut got = got;
        got.sort_by(|a, b| a.to.cmp(&b.to));
        got
    };
    assert_eq!(got[1].to, ["dave@example.net"]);
    assert_eq!(got[0].to, ["carol@example.net"]);
    assert!(got[0].from.starts_with("bounces+"), "{:?}", got[0].from);
    assert!(
        got[0].data.contains("Subject: Hello Carol"),
        "{}",
        got[0].data
    );
    stop_gracefully(&mut server);
}

/// Whether `needle` is anywhere in the site store's files (the database,
/// its write-ahead log and shared memory).
fn site_store_holds(site: &Path, needle: &str) -> bool {
    ["site.sqlite", "site.sqlite-wal", "site.sqlite-shm"]
        .iter()
        .filter_map(|f| std::fs::read(site.join(f)).ok())
        .any(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// Issue 16, item 5: the relay password is kept sealed, under a key kept
/// outside the store (`secret.key`, mode 0600, or MANTISSA_SECRET_KEY),
/// and the relay still gets it; a wrong key is an error that says what to
/// do; MANTISSA_MAIL_PASSWORD gives it without keeping it at all.
#[test]
fn the_mail_relay_password_is_kept_sealed_and_the_relay_still_gets_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let site = cwd.join("s");
    ok(mantissa(cwd, &["init", "s"]));
    let sink = mantissa::testing::SmtpSink::start();
    let password = "correct-horse-relay-password-8813";
    let r = run_with_input(
        mantissa(
            cwd,
            &[
                "--site",
                "s",
                "mail",
                "set",
                "--from",
                "site@example.org",
                "--relay",
                &sink.addr.to_string(),
                "--user",
                "relay-user",
                "--password-stdin",
            ],
        ),
        &format!("{password}\n"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let key_file = site.join("secret.key");
    assert!(
        r.stdout.contains(&format!(
            "The relay password is kept sealed with the key from {}",
            key_file.display()
        )),
        "{r:?}"
    );
    assert!(
        !site_store_holds(&site, password),
        "the password, in plain text"
    );
    assert!(site_store_holds(&site, "sealed1:"));
    let key = std::fs::read_to_string(&key_file).unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .unwrap();
    assert_eq!(bytes.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    // Approving mails the person, through the relay, logged in with the
    // password.
    pending_account(&site, "pat", "pat@example.org", true);
    ok(mantissa(cwd, &["--site", "s", "user", "approve", "pat"]));
    assert_eq!(sink.wait_for(1).len(), 1);
    assert_eq!(
        sink.logins(),
        [("relay-user".to_string(), password.to_string())]
    );

    // Another key does not open it: the mail waits, and the error says
    // what to do.
    let approve = |name: &str, key: Option<&str>| {
        pending_account(&site, name, &format!("{name}@example.org"), true);
        let mut cmd = mantissa(cwd, &["--site", "s", "user", "approve", name]);
        if let Some(key) = key {
            cmd.env("MANTISSA_SECRET_KEY", key);
        }
        ok(cmd)
    };
    let other = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let r = approve("quinn", Some(&other));
    assert!(
        r.stderr.contains(
            "the relay password in the site store does not open with the key from MANTISSA_SECRET_KEY"
        ) && r.stderr.contains("set MANTISSA_SECRET_KEY to the key it was sealed with"),
        "{r:?}"
    );
    // A key that is not one is refused, naming the variable.
    let r = approve("ria", Some("c2hvcnQ="));
    assert!(
        r.stderr
            .contains("MANTISSA_SECRET_KEY is not the base64 of 32 bytes (5 bytes, not 32)"),
        "{r:?}"
    );
    // Without its key file, nothing opens it either.
    let moved = cwd.join("secret.key.elsewhere");
    std::fs::rename(&key_file, &moved).unwrap();
    let r = approve("sam", None);
    assert!(
        r.stderr.contains(&format!(
            "the secret key file {}: there is none",
            key_file.display()
        )) && r.stderr.contains("restore it, or set MANTISSA_SECRET_KEY"),
        "{r:?}"
    );
    // Nor does the server start without it, saying why.
    let r = run(mantissa(
        cwd,
        &["--site", "s", "serve", "--listen", "127.0.0.1:0"],
    ));
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("there is none") && r.stderr.contains("restore it"),
        "{r:?}"
    );
    assert_eq!(sink.messages().len(), 1, "nothing was sent meanwhile");
    assert_eq!(sink.logins().len(), 1);
    // The key itself in the environment opens it (as on PostgreSQL, whose
    // nodes keep no file), and what waited goes.
    approve("tia", Some(key.trim()));
    assert!(
        !key_file.exists(),
        "no key file is made when the key is given"
    );
    let got = sink.wait_for(5);
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(
        sink.logins()
            .iter()
            .all(|l| *l == ("relay-user".to_string(), password.to_string())),
        "{:?}",
        sink.logins()
    );
    std::fs::rename(&moved, &key_file).unwrap();

    // MANTISSA_MAIL_PASSWORD gives the password, and the store keeps none.
    ok(mantissa(
        cwd,
        &[
            "--site",
            "s",
            "mail",
            "set",
            "--relay",
            &sink.addr.to_string(),
            "--user",
            "env-user",
        ],
    ));
    assert!(
        !site_store_holds(&site, "sealed1:") || {
            // Freed pages may still hold the old sealed text; the row holds none.
            let s = Site::open_existing(&site).unwrap();
            let c = mantissa::mail::MailConfig::load(&s).unwrap().unwrap();
            c.password_sealed.is_none()
        }
    );
    pending_account(&site, "uma", "uma@example.org", true);
    let mut cmd = mantissa(cwd, &["--site", "s", "user", "approve", "uma"]);
    cmd.env("MANTISSA_MAIL_PASSWORD", "from-the-environment");
    ok(cmd);
    assert_eq!(sink.wait_for(6).len(), 6);
    assert_eq!(
        sink.logins().last().unwrap(),
        &("env-user".to_string(), "from-the-environment".to_string())
    );
}
