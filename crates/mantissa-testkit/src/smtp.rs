//! An SMTP server on 127.0.0.1 that accepts every message and keeps it, for
//! tests that read the mail a flow sent. It speaks just enough SMTP for a
//! real client (EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT).
//! It takes any user name and password, and keeps them for the test to
//! read ([`SmtpSink::logins`]). Told to
//! (see [`SmtpSink::answer_next`]), it refuses the next messages at the end
//! of DATA with a temporary (4xx) or permanent (5xx) reply instead, and
//! does not keep them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A received message.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// The SMTP sink; runs on its own thread until dropped with the process.
pub struct SmtpSink {
    pub addr: SocketAddr,
    messages: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
    connections: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    logins: Arc<Mutex<Vec<(String, String)>>>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let messages: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = messages.clone();
        let answers: Arc<Mutex<VecDeque<u16>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let logins: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (scripted, connected, refusals, logged) = (
            answers.clone(),
            connections.clone(),
            refused.clone(),
            logins.clone(),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let kept = kept.clone();
                    let scripted = scripted.clone();
                    let refusals = refusals.clone();
                    let logged = logged.clone();
                    connected.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let (r, mut w) = stream.into_split();
                        let mut lines = BufReader::new(r).lines();
                        let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                        let (mut from, mut to) = (String::new(), Vec::new());
                        while let Ok(Some(line)) = lines.next_line().await {
                            let upper = line.to_ascii_uppercase();
                            let refusal;
                            let reply: &[u8] = if upper.starts_with("EHLO") {
                                b"250-sink\r\n250-8BITMIME\r\n250-AUTH PLAIN\r\n250 SMTPUTF8\r\n"
                            } else if upper.starts_with("AUTH PLAIN") {
                                // RFC 4616: the initial response on the
                                // line, or asked for.
                                let mut answer = line[10..].trim().to_string();
                                if answer.is_empty() {
                                    let _ = w.write_all(b"334 \r\n").await;
                                    answer = match lines.next_line().await {
                                        Ok(Some(l)) => l.trim().to_string(),
                                        _ => break,
                                    };
                                }
                                match plain_login(&answer) {
                                    Some(login) => {
                                        logged.lock().unwrap().push(login);
                                        b"235 ok\r\n"
                                    }
                                    None => b"501 not AUTH PLAIN\r\n",
                                }
                            } else if upper.starts_with("HELO")
                                || upper.starts_with("RSET")
                                || upper.starts_with("NOOP")
                            {
                                b"250 ok\r\n"
                            } else if upper.starts_with("MAIL FROM:") {
                                from = line[10..].trim().trim_matches(['<', '>']).to_string();
                                b"250 ok\r\n"
                            } else if upper.starts_with("RCPT TO:") {
                                to.push(line[8..].trim().trim_matches(['<', '>']).to_string());
                                b"250 ok\r\n"
                            } else if upper == "DATA" {
                                let _ = w.write_all(b"354 go ahead\r\n").await;
                                let mut data = String::new();
                                while let Ok(Some(l)) = lines.next_line().await {
                                    if l == "." {
                                        break;
                                    }
                                    data.push_str(l.strip_prefix('.').unwrap_or(&l));
                                    data.push('\n');
                                }
                                let received = Received {
                                    from: std::mem::take(&mut from),
                                    to: std::mem::take(&mut to),
                                    data,
                                };
                                match scripted.lock().unwrap().pop_front() {
                                    Some(code) if code != 250 => {
                                        refusals.fetch_add(1, Ordering::SeqCst);
                                        refusal = format!("{code} refused as told\r\n");
                                        refusal.as_bytes()
                                    }
                                    _ => {
                                        kept.lock().unwrap().push(received);
                                        b"250 queued\r\n"
                                    }
                                }
                            } else if upper.starts_with("QUIT") {
                                let _ = w.write_all(b"221 bye\r\n").await;
                                break;
                            } else {
                                b"502 not implemented\r\n"
                            };
                            if w.write_all(reply).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        SmtpSink {
            addr,
            messages,
            answers,
            connections,
            refused,
            logins,
        }
    }

    /// The user names and passwords clients logged in with (AUTH PLAIN),
    /// in order.
    pub fn logins(&self) -> Vec<(String, String)> {
        self.logins.lock().unwrap().clone()
    }

    /// Answers the next messages' DATA with these reply codes, one per
    /// message, in order (250 keeps the message; a 4xx or 5xx refuses it);
    /// messages after them are kept as usual.
    pub fn answer_next(&self, codes: impl IntoIterator<Item = u16>) {
        self.answers.lock().unwrap().extend(codes);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Messages refused so far (as told by [`SmtpSink::answer_next`]).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// Messages received so far.
    pub fn messages(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits (up to 5 s) until `n` messages have arrived.
    pub fn wait_for(&self, n: usize) -> Vec<Received> {
        self.wait_for_within(n, Duration::from_secs(5))
    }

    /// Waits (up to `limit`) until `n` messages have arrived.
    pub fn wait_for_within(&self, n: usize, limit: Duration) -> Vec<Received> {
        let start = std::time::Instant::now();
        loop {
            let m = self.messages();
            if m.len() >= n || start.elapsed() > limit {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The user name and password of an AUTH PLAIN answer (base64 of
/// `authzid NUL authcid NUL passwd`).
fn plain_login(answer: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(answer)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split('\0');
    let (_, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    Some((user.to_string(), password.to_string()))
}

/// Whether `message` carries a DKIM signature that verifies against the
/// TXT record `record` published at `name` (`selector._domainkey.domain`),
/// as a receiver checks it: by dkimpy (Debian's `python3-dkim`, which
/// `.ci/test` installs), an implementation independent of the one that
/// signs, asked for no other DNS name. Lines are sent as CRLF, as on the
/// wire (the sink keeps them as LF).
///
/// Panics when dkimpy cannot be run, saying what to install.
pub fn dkim_verifies(message: &str, name: &str, record: &str) -> bool {
    use std::io::Write;
    const SCRIPT: &str = r#"
import sys, dkim
name, record = sys.argv[1], sys.argv[2].encode()
def dns(qname, timeout=5):
    if isinstance(qname, bytes):
        qname = qname.decode()
    return record if qname.rstrip(".") == name else b""
print("pass" if dkim.verify(sys.stdin.buffer.read(), dnsfunc=dns) else "fail")
"#;
    let wire = message.replace("\r\n", "\n").replace('\n', "\r\n");
    // Debian's interpreter, where python3-dkim is installed (a `python3`
    // earlier on the PATH may be another one).
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, name, record])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 runs (install python3-dkim: .ci/test does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(wire.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dkimpy failed (install python3-dkim: .ci/test does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    said.trim() == "pass"
}
