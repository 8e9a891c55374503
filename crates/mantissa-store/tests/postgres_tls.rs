//! A site reaches its PostgreSQL server over TLS when its URL says
//! `sslmode=require`, trusting the authority its `sslrootcert` names
//! (besides the system's), and refuses a server whose certificate it
//! cannot trust.

use std::os::unix::fs::PermissionsExt;

use mantissa_store::*;

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "t.tls.note", version = 1)]
struct Note {
    text: String,
}

/// Runs `sql` as the server's superuser.
fn as_superuser(sql: &str) -> Vec<tokio_postgres::Row> {
    let server = mantissa_store::testing::postgres_server();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut rows = Vec::new();
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            rows = client.query(statement, &[]).await.unwrap();
        }
        rows
    })
}

#[test]
fn a_site_reaches_its_database_over_tls_and_refuses_a_server_it_cannot_trust() {
    // A certificate for 127.0.0.1, readable by the server (which runs as
    // the `postgres` user), its key by the server alone.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (crt, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let postgres = std::process::Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    let uid: u32 = String::from_utf8(postgres.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for f in [&crt, &key] {
        std::os::unix::fs::chown(f, Some(uid), None).unwrap();
    }
    as_superuser(&format!(
        "ALTER SYSTEM SET ssl_cert_file = '{}'; ALTER SYSTEM SET ssl_key_file = '{}';
         ALTER SYSTEM SET ssl = on; SELECT pg_reload_conf()",
        crt.display(),
        key.display()
    ));
    let url = mantissa_store::testing::postgres_database();
    let tls_url = format!("{url}?sslmode=require");
    let database = url.rsplit('/').next().unwrap().to_string();

    // A server whose certificate no authority it trusts signed: refused,
    // saying why.
    let site_dir = tempfile::tempdir().unwrap();
    let refused = Site::open_postgres(site_dir.path(), &tls_url)
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("certificate") || refused.contains("UnknownIssuer"),
        "{refused}"
    );

    // Trusting its authority, the site works, over TLS.
    let trusting = format!("{tls_url}&sslrootcert={}", crt.display());
    let site = Site::open_postgres(site_dir.path(), &trusting).unwrap();
    let ann = site.user_store("ann").unwrap();
    ann.write_blocking(|tx| {
        tx.insert(&Note {
            text: "over TLS".into(),
        })
    })
    .unwrap();
    assert_eq!(
        ann.read_blocking(|r| r.query::<Note>().column(Note::text))
            .unwrap(),
        ["over TLS"]
    );
    let rows = as_superuser(&format!(
        "SELECT COUNT(*) FILTER (WHERE s.ssl), COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.datname = '{database}'"
    ));
    let (over_tls, all): (i64, i64) = (rows[0].get(0), rows[0].get(1));
    assert!(all > 0);
    assert_eq!(over_tls, all, "every connection of the site is over TLS");
    drop((ann, site));
    as_superuser(
        "ALTER SYSTEM RESET ssl; ALTER SYSTEM RESET ssl_cert_file; ALTER SYSTEM RESET ssl_key_file; SELECT pg_reload_conf()",
    );
}
