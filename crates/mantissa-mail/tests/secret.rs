//! The relay password, kept sealed in the site store (issue 16, item 5):
//! a site whose mail configuration was written by version 1, with the
//! password in plain text (tests/resources/site-mail-config-v1, see
//! tests/resources/README.md), has it sealed when it opens, under a key
//! file made beside the store, and the relay still gets it.

use std::path::Path;

use mantissa_mail::secret::{KEY_FILE, is_sealed};
use mantissa_mail::{MailConfig, Mailer, OutgoingMail, SecretError, SecretKey};
use mantissa_store::Site;
use mantissa_testkit::SmtpSink;

/// What the old site's `mail set --password-stdin` was given.
const OLD_PASSWORD: &str = "plaintext-relay-password-v1";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn old_site(tmp: &Path) -> std::path::PathBuf {
    let res = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resources/site-mail-config-v1");
    let dir = tmp.join("site");
    copy_dir(&res, &dir);
    // Empty, so not kept in git.
    std::fs::create_dir_all(dir.join("users")).unwrap();
    dir
}

fn holds(file: &Path, needle: &str) -> bool {
    std::fs::read(file)
        .unwrap()
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn a_plaintext_password_from_version_1_is_sealed_and_the_relay_still_gets_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = old_site(tmp.path());
    assert!(
        holds(&dir.join("site.sqlite"), OLD_PASSWORD),
        "the old site keeps it in plain text"
    );
    assert!(!dir.join(KEY_FILE).exists());
    let site = Site::open_existing(&dir).unwrap();
    let config = MailConfig::load(&site).unwrap().unwrap();
    let sealed = config.password_sealed.clone().unwrap();
    assert!(
        is_sealed(&sealed) && !sealed.contains(OLD_PASSWORD),
        "{sealed}"
    );
    assert_eq!(config.username.as_deref(), Some("relay-user"));
    assert_eq!(config.from, "site@example.org");
    // The key was made beside the store, for its owner only.
    let key_file = dir.join(KEY_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    assert_eq!(
        config.password(&site).unwrap().as_deref(),
        Some(OLD_PASSWORD)
    );

    // The relay gets the password (the old relay's address points at the
    // sink instead).
    let sink = SmtpSink::start();
    let mut at_sink = config.clone();
    at_sink.relay = Some(sink.addr.to_string());
    let relay = at_sink.smtp_relay(&site).unwrap().unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(relay.send(OutgoingMail {
            from: "site@example.org".into(),
            to: vec!["ann@example.org".into()],
            subject: "Hello".into(),
            text: "hello\n".into(),
            html: None,
            unsubscribe: None,
        }))
        .unwrap();
    assert_eq!(
        sink.logins(),
        [("relay-user".to_string(), OLD_PASSWORD.to_string())]
    );

    // Another key opens nothing: an error that says what to do, never a
    // garbled password.
    let key = std::fs::read_to_string(&key_file).unwrap();
    std::fs::write(&key_file, "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n").unwrap();
    let e = config.password(&site).unwrap_err();
    assert!(matches!(e, SecretError::WrongKey { .. }), "{e}");
    let said = e.to_string();
    assert!(
        said.contains("the relay password in the site store does not open with the key from")
            && said.contains("mantissa mail set --user USER --password-stdin"),
        "{said}"
    );
    assert!(at_sink.smtp_relay(&site).is_err());
    std::fs::remove_file(&key_file).unwrap();
    let e = config.password(&site).unwrap_err();
    assert!(
        e.to_string().contains("there is none") && e.to_string().contains("MANTISSA_SECRET_KEY"),
        "{e}"
    );
    assert!(!key_file.exists(), "reading makes no key");
    std::fs::write(&key_file, key).unwrap();
    assert_eq!(
        config.password(&site).unwrap().as_deref(),
        Some(OLD_PASSWORD)
    );
    site.close().unwrap();
    // And it is gone from the files, free pages included, once the site
    // is closed (the old table's pages were overwritten as it was dropped).
    drop(site);
    for f in ["site.sqlite", "site.sqlite-wal"] {
        let path = dir.join(f);
        assert!(
            !path.exists() || !holds(&path, OLD_PASSWORD),
            "{f} still holds the old password"
        );
    }
}

#[test]
fn a_password_set_now_is_sealed_with_the_site_s_key() {
    let tmp = tempfile::tempdir().unwrap();
    let site = Site::open(tmp.path().join("site")).unwrap();
    let mut config = MailConfig {
        from: "site@example.org".into(),
        relay: Some("127.0.0.1:25".into()),
        relay_tls: false,
        username: Some("u".into()),
        password_sealed: None,
    };
    config.set_password(&site, Some("a new password")).unwrap();
    MailConfig::save(&site, config).unwrap();
    let config = MailConfig::load(&site).unwrap().unwrap();
    let key = MailConfig::secret_key(&site, false).unwrap();
    assert_eq!(
        key.source(),
        tmp.path().join("site").join(KEY_FILE).display().to_string()
    );
    let sealed = config.password_sealed.as_deref().unwrap();
    assert_eq!(
        key.open("the relay password", sealed).unwrap(),
        "a new password"
    );
    assert_eq!(
        config.password(&site).unwrap().as_deref(),
        Some("a new password")
    );
    // Sealed for the relay password: not opened as anything else.
    assert!(
        SecretKey::from_bytes([1; 32], "another")
            .open("the relay password", sealed)
            .is_err()
    );
    site.close().unwrap();
}
