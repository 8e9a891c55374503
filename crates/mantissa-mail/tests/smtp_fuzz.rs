//! SMTP dialogues from a property test against the inbound server on the
//! connection host: sequences of commands, well formed and not, with
//! random arguments, data and bytes, each case a session of its own. No
//! session may panic the server or stall it: beside them it still takes a
//! message, and each stored only the messages it said 250 to.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mantissa_mail::inbound::{
    Destination, DestinationFuture, InboundMail, Recipients, SmtpLimits, SmtpProtocol,
};
use mantissa_server::{Guard, Limits, Server};
use mantissa_store::Site;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// ann@example.org for the dialogues; bob@example.org for the check after
/// them (the two tests run at once).
struct AnnAndBob;

impl Recipients for AnnAndBob {
    fn destination(&self, address: &str) -> DestinationFuture {
        let user = match address.to_ascii_lowercase().as_str() {
            "ann@example.org" => Some("ann"),
            "bob@example.org" => Some("bob"),
            _ => None,
        };
        Box::pin(async move { user.map(|u| Destination::User(u.into())) })
    }
}

struct Shared {
    rt: tokio::runtime::Runtime,
    site: Site,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let site = mantissa_store::testing::open_site(&dir.path().join("site")).unwrap();
        site.user_store("ann").unwrap();
        site.user_store("bob").unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let limits = Limits {
            // Every case connects from 127.0.0.1.
            max_connections_per_ip: 10_000,
            requests_per_second_per_ip: 1_000_000,
            request_burst_per_ip: 1_000_000,
            ..Limits::default()
        };
        let smtp = SmtpLimits {
            max_message_bytes: 4096,
            ..SmtpLimits::default()
        };
        let protocol = SmtpProtocol::new(site.clone(), "mx.example.org", smtp, Arc::new(AnnAndBob));
        let addr = rt.block_on(async {
            let mut server = Server::new(Guard::new(limits));
            let addr = server
                .listen("127.0.0.1:0".parse().unwrap(), None, Arc::new(protocol))
                .await
                .unwrap();
            tokio::spawn(server.run(std::future::pending()));
            addr
        });
        Shared {
            rt,
            site,
            addr,
            _dir: dir,
        }
    })
}

/// One line of a dialogue.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let address = prop_oneof![
        Just("ann@example.org".to_string()),
        Just("ANN@EXAMPLE.ORG".to_string()),
        "[a-z]{1,8}@[a-z]{1,8}\\.(org|net)",
        "[ -~]{0,40}",
    ];
    prop_oneof![
        "[a-zA-Z0-9.-]{0,20}".prop_map(|h| format!("EHLO {h}").into_bytes()),
        "[a-zA-Z0-9.-]{0,20}".prop_map(|h| format!("HELO {h}").into_bytes()),
        (
            address.clone(),
            "( SIZE=[0-9]{1,9}| BODY=8BITMIME| [A-Z]{1,6}=[ -~]{0,8})?"
        )
            .prop_map(|(a, p)| format!("MAIL FROM:<{a}>{p}").into_bytes()),
        address.prop_map(|a| format!("RCPT TO:<{a}>").into_bytes()),
        Just(b"DATA".to_vec()),
        "[ -~]{0,100}".prop_map(|t| t.into_bytes()),
        Just(b".".to_vec()),
        Just(b"..".to_vec()),
        Just(b"RSET".to_vec()),
        Just(b"NOOP".to_vec()),
        Just(b"STARTTLS".to_vec()),
        "[A-Za-z0-9+/=]{0,40}".prop_map(|r| format!("AUTH PLAIN {r}").into_bytes()),
        Just(b"VRFY ann".to_vec()),
        Just(b"BDAT 10 LAST".to_vec()),
        "[A-Z]{1,10}( [ -~]{0,30})?".prop_map(|c| c.into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..300),
        (1usize..6000).prop_map(|n| vec![b'x'; n]),
    ]
}

/// Sends a dialogue and reads until the server closes or goes quiet;
/// returns how many times it said it delivered.
async fn session(addr: std::net::SocketAddr, lines: &[Vec<u8>]) -> usize {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut wire = Vec::new();
    for l in lines {
        wire.extend_from_slice(l);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"QUIT\r\n");
    let (mut r, mut w) = conn.split();
    let reading = async {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), r.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    };
    let writing = async {
        let _ = w.write_all(&wire).await;
    };
    let (replies, ()) = tokio::join!(reading, writing);
    String::from_utf8_lossy(&replies)
        .lines()
        .filter(|l| l.starts_with("250 2.0.0 Delivered"))
        .count()
}

fn stored() -> usize {
    shared()
        .site
        .user_store("ann")
        .unwrap()
        .read_blocking(|r| r.query::<InboundMail>().count())
        .unwrap() as usize
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_dialogue_is_answered_and_stores_only_what_it_acknowledged(
        lines in proptest::collection::vec(line(), 0..40)
    ) {
        let s = shared();
        let before = stored();
        let delivered = s.rt.block_on(session(s.addr, &lines));
        prop_assert_eq!(stored() - before, delivered);
    }
}

#[test]
fn beside_the_dialogues_the_server_still_takes_mail() {
    let s = shared();
    let lines: Vec<Vec<u8>> = [
        "EHLO x",
        "MAIL FROM:<b@example.net>",
        "RCPT TO:<bob@example.org>",
        "DATA",
        "Subject: still here",
        "",
        "hi",
        ".",
    ]
    .iter()
    .map(|l| l.as_bytes().to_vec())
    .collect();
    assert_eq!(s.rt.block_on(session(s.addr, &lines)), 1);
}
