//! HTTPS: a port with a certificate serves over TLS, cookies set there
//! are marked Secure and take the `__Host-` prefix, and answers carry HSTS.

use std::sync::Arc;

use axum::Router;
use mantissa_server::{Guard, Limits, load_tls};
use mantissa_web::{App, HttpProtocol, Page, WebOptions, site_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn https_serves_pages_and_marks_cookies_secure() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let tls = load_tls(&cert_path, &key_path).unwrap();

    let site = mantissa_store::testing::open_site(&dir.path().join("site")).unwrap();
    let guard = Guard::new(Limits::default());
    let app = App::new(
        site,
        guard.clone(),
        WebOptions {
            templates: vec![("form.html".into(), "{{ csrf_field() }}")],
            ..WebOptions::default()
        },
    )
    .unwrap();
    let router = app.router_with(
        Router::new().route(
            "/form",
            axum::routing::get(|| async { Page::new("form.html", serde_json::json!({})) })
                .post(|| async { "posted" }),
        ),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut server = site_server(guard);
        let addr = server
            .listen(
                "127.0.0.1:0".parse().unwrap(),
                Some(tls),
                Arc::new(HttpProtocol::new(router)),
            )
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let send = |raw: String| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut s = connector.connect(name, tcp).await.unwrap();
                s.write_all(raw.as_bytes()).await.unwrap();
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out).await;
                String::from_utf8_lossy(&out).into_owned()
            }
        };
        let get = |path: &'static str| {
            send(format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            ))
        };
        let post = |cookie: String, body: String| {
            send(format!(
                "POST /form HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
                 Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            ))
        };
        let front = get("/").await;
        assert!(front.starts_with("HTTP/1.1 200 OK"), "{front}");
        let form = get("/form").await;
        let cookie = form
            .lines()
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with("set-cookie: __host-mantissa_csrf=")
            })
            .unwrap_or_else(|| panic!("{form}"));
        // Issue 13, item 18: over TLS the cookies take the `__Host-`
        // prefix, which browsers accept only with Secure, Path=/ and no
        // Domain, from this origin.
        assert!(cookie.contains("; Secure"), "{cookie}");
        assert!(cookie.contains("; Path=/"), "{cookie}");
        assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
        let token = cookie
            .split_once('=')
            .unwrap()
            .1
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let posted = post(
            format!("__Host-mantissa_csrf={token}"),
            format!("csrf_token={token}"),
        )
        .await;
        assert!(posted.starts_with("HTTP/1.1 200 OK"), "{posted}");
        // A cookie without the prefix (as a neighbouring subdomain or a
        // plain-HTTP man in the middle could plant) does not count.
        let planted = post(
            format!("mantissa_csrf={token}"),
            format!("csrf_token={token}"),
        )
        .await;
        assert!(planted.starts_with("HTTP/1.1 403"), "{planted}");
        // Issue 13, item 17: HSTS on TLS ports (a year, by default).
        assert!(
            front
                .to_ascii_lowercase()
                .contains("\r\nstrict-transport-security: max-age=31536000\r\n"),
            "{front}"
        );

        // A plain-text client on the TLS port gets nowhere, and the server
        // goes on.
        let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = plain.read_to_end(&mut buf).await;
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
        assert!(get("/").await.starts_with("HTTP/1.1 200 OK"));

        let _ = stop.send(());
        running.await.unwrap();
    });
}
