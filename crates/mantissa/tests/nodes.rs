//! One site served by several `mantissa serve` processes ("nodes") on one
//! PostgreSQL database (`--store`): what one node writes, every node
//! serves, and a session made on one is valid on the others.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;

use mantissa_testkit::http::{Response, request_text, send_raw};
use std::process::{Child, Command, Stdio};

fn mantissa(cwd: &Path, store: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mantissa"));
    c.current_dir(cwd)
        .args(args)
        .env("MANTISSA_STORE", store)
        .env_remove("MANTISSA_SITE")
        .env("NO_COLOR", "1");
    c
}

/// A node serving `site` on a port of its own; stopped when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    fn start(cwd: &Path, store: &str, site: &str) -> Node {
        let child = mantissa(
            cwd,
            store,
            &["--site", site, "serve", "--listen", "127.0.0.1:0"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        Node::from_child(child)
    }

    /// The node `child` runs, once it says where it serves.
    fn from_child(mut child: Child) -> Node {
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut addr = None;
        for _ in 0..10 {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            if let Some(a) = line
                .strip_prefix("Serving http://")
                .and_then(|u| u.strip_suffix("/\n"))
            {
                addr = Some(a.to_string());
                break;
            }
        }
        // Keep reading what it says, so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Node {
            child,
            addr: addr
                .expect("the node says where it serves")
                .parse()
                .unwrap(),
        }
    }

    /// Sends one request, asking for JSON.
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        let mut all = vec![("Accept", "application/json")];
        all.extend_from_slice(headers);
        send_raw(
            self.addr,
            request_text(self.addr, method, path, &all, body).as_bytes(),
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the cookie `name` that `r` sets.
fn cookie(r: &Response, name: &str) -> Option<String> {
    r.headers_named("set-cookie")
        .into_iter()
        .filter_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
        .next()
}

#[test]
fn two_nodes_serve_one_site_and_share_its_accounts_and_sessions() {
    let store = mantissa_store::testing::postgres_database();
    let tmp = tempfile::tempdir().unwrap();
    // An account made from the command line, on the database.
    let mut add = mantissa(
        tmp.path(),
        &store,
        &["--site", "one", "user", "add", "ann", "--password-stdin"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"ann's long password\n")
        .unwrap();
    let out = add.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Two nodes, each with a folder of its own: the same site.
    let a = Node::start(tmp.path(), &store, "node-a");
    let b = Node::start(tmp.path(), &store, "node-b");

    // Log in on node A, with JSON and the CSRF header.
    let (cookies, fresh) = sign_in(&a, "ann", "ann's long password");
    let signed_in = [
        ("Cookie", cookies.as_str()),
        ("X-CSRF-Token", fresh.as_str()),
    ];

    // Node B knows the session node A made.
    for node in [&a, &b] {
        let r = node.request("GET", "/api/private/settings", &signed_in, "");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("\"user\":\"ann\""), "{}", r.text());
    }

    // Logged out on node B, the session is gone on node A too.
    let r = b.request(
        "POST",
        "/api/logout",
        &[
            signed_in[0],
            signed_in[1],
            ("Content-Type", "application/json"),
        ],
        "{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for node in [&a, &b] {
        let r = node.request("GET", "/api/private/settings", &signed_in, "");
        assert_eq!(r.status, 401, "{}", r.text());
    }
    // And the nodes keep nothing of the site in their folders.
    assert!(!tmp.path().join("node-a/site.sqlite").exists());
    assert!(!tmp.path().join("node-b/site.sqlite").exists());
}

/// Sends `raw` to `addr`; `None` when the node is not there (killed) or
/// does not answer in time.
fn try_send(addr: SocketAddr, raw: &str) -> Option<Response> {
    use std::io::Read;
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    s.write_all(raw.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    (!buf.is_empty()).then(|| mantissa_testkit::http::parse(&buf))
}

/// Signs in on `node` with JSON; returns the headers of a signed-in
/// request.
fn sign_in(node: &Node, who: &str, password: &str) -> (String, String) {
    let r = node.request("GET", "/api/login", &[], "");
    let csrf = r.header("x-csrf-token").expect("a CSRF token").to_string();
    let csrf_cookie = format!("mantissa_csrf={csrf}");
    let r = node.request(
        "POST",
        "/api/login",
        &[
            ("Cookie", &csrf_cookie),
            ("X-CSRF-Token", &csrf),
            ("Content-Type", "application/json"),
        ],
        &format!(r#"{{"who":"{who}","password":"{password}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let session = cookie(&r, "mantissa_session").expect("a session cookie");
    let fresh = r
        .header("x-csrf-token")
        .expect("a new CSRF token")
        .to_string();
    (
        format!("mantissa_session={session}; mantissa_csrf={fresh}"),
        fresh,
    )
}

/// Three nodes on one database take writes (an administrator's script
/// making accounts, spread over them) while one node after another is
/// killed with SIGKILL and started again: every account a node
/// acknowledged is there at the end, and the session made before it all
/// still works on every node.
#[test]
fn a_node_killed_under_write_load_loses_no_acknowledged_write() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let store = mantissa_store::testing::postgres_database();
    let tmp = tempfile::tempdir().unwrap();
    let mut add = mantissa(
        tmp.path(),
        &store,
        &[
            "--site",
            "n0",
            "user",
            "add",
            "root",
            "--admin",
            "--password-stdin",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"root's long password\n")
        .unwrap();
    assert!(add.wait().unwrap().success());
    let names = ["n0", "n1", "n2"];
    let mut nodes: Vec<Node> = names
        .iter()
        .map(|n| Node::start(tmp.path(), &store, n))
        .collect();
    let (cookies, csrf) = sign_in(&nodes[0], "root", "root's long password");
    let addrs = Arc::new(Mutex::new(nodes.iter().map(|n| n.addr).collect::<Vec<_>>()));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (addrs, acknowledged, stop) = (addrs.clone(), acknowledged.clone(), stop.clone());
        let (cookies, csrf) = (cookies.clone(), csrf.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let addr = {
                    let a = addrs.lock().unwrap();
                    a[n % a.len()]
                };
                let name = format!("u{n}");
                let body = format!(r#"{{"username":"{name}","email":"{name}@example.org"}}"#);
                let raw = request_text(
                    addr,
                    "POST",
                    "/api/admin/users",
                    &[
                        ("Accept", "application/json"),
                        ("Content-Type", "application/json"),
                        ("Cookie", &cookies),
                        ("X-CSRF-Token", &csrf),
                    ],
                    &body,
                );
                if try_send(addr, &raw).is_some_and(|r| r.status == 201) {
                    acknowledged.lock().unwrap().push(name);
                }
            }
        })
    };
    for round in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let victim = round % 3;
        // SIGKILL: no shutdown of any kind.
        let _ = nodes[victim].child.kill();
        let _ = nodes[victim].child.wait();
        std::thread::sleep(std::time::Duration::from_millis(200));
        nodes[victim] = Node::start(tmp.path(), &store, names[victim]);
        addrs.lock().unwrap()[victim] = nodes[victim].addr;
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!(
        "{} accounts acknowledged across 6 kills",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() >= 20,
        "the nodes took writes: {} acknowledged",
        acknowledged.len()
    );
    let listed = mantissa(
        tmp.path(),
        &store,
        &["--site", "n0", "user", "list", "--json"],
    )
    .output()
    .unwrap();
    assert!(listed.status.success());
    let users: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let present: std::collections::HashSet<&str> = users["users"]
        .as_array()
        .expect("a list of users")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !present.contains(n.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    // The session made before the kills works on every node, old and new.
    for node in &nodes {
        let r = node.request(
            "GET",
            "/api/private/settings",
            &[("Cookie", &cookies), ("X-CSRF-Token", &csrf)],
            "",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// The binary without `--store`: a site in SQLite files.
fn on_files(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mantissa"));
    c.current_dir(cwd)
        .args(args)
        .env_remove("MANTISSA_STORE")
        .env_remove("MANTISSA_SITE")
        .env("NO_COLOR", "1");
    c
}

fn succeeds(mut c: Command, input: Option<&str>) -> String {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    stdout
}

/// `mantissa migrate --to` moves a SQLite site into PostgreSQL, where a
/// node serves it (its accounts log in); run again, it finds everything
/// there; `migrate --from` moves it back into files, served again.
#[test]
fn a_site_is_migrated_to_postgres_and_back_and_served_from_each() {
    let store = mantissa_store::testing::postgres_database();
    let tmp = tempfile::tempdir().unwrap();
    succeeds(on_files(tmp.path(), &["init", "s"]), None);
    succeeds(
        on_files(
            tmp.path(),
            &["--site", "s", "user", "add", "ann", "--password-stdin"],
        ),
        Some("ann's long password\n"),
    );
    let said = succeeds(
        on_files(tmp.path(), &["--site", "s", "migrate", "--to", &store]),
        None,
    );
    assert!(
        said.contains("into the PostgreSQL database: 2 stores copied"),
        "{said}"
    );
    assert!(said.contains("checked against the original"), "{said}");
    assert!(said.contains("--store URL serve"), "{said}");

    let again = succeeds(
        on_files(tmp.path(), &["--site", "s", "migrate", "--to", &store]),
        None,
    );
    assert!(
        again.contains("0 stores copied (2 more were there from an earlier run)"),
        "{again}"
    );

    // Another site, into the same database: refused, saying how to
    // replace what is there; the site there is untouched.
    succeeds(on_files(tmp.path(), &["init", "other"]), None);
    let refused = on_files(tmp.path(), &["--site", "other", "migrate", "--to", &store])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("store \"site\" holds items of its own") && said.contains("--replace"),
        "{said}"
    );

    let node = Node::start(tmp.path(), &store, "s");
    sign_in(&node, "ann", "ann's long password");
    drop(node);

    let back = succeeds(
        on_files(tmp.path(), &["--site", "back", "migrate", "--from", &store]),
        None,
    );
    // Serving made the administrator's account, and its store.
    assert!(
        back.contains("into SQLite files: 3 stores copied"),
        "{back}"
    );
    let mut served = on_files(
        tmp.path(),
        &["--site", "back", "serve", "--listen", "127.0.0.1:0"],
    );
    served.stdout(Stdio::piped()).stderr(Stdio::null());
    let node = Node::from_child(served.spawn().unwrap());
    sign_in(&node, "ann", "ann's long password");
}
