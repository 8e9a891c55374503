//! A real server on 127.0.0.1 and a plain HTTP/1.1 client over TCP.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use mantissa_server::{Guard, Limits};
use mantissa_store::Site;
use mantissa_web::{App, HttpProtocol, WebOptions, WebService, site_server};

pub struct TestServer {
    pub addr: SocketAddr,
    pub site: Site,
    pub app: App,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub struct Setup {
    pub limits: Limits,
    pub options: WebOptions,
    pub before: Box<dyn FnOnce(&Site)>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            limits: Limits::default(),
            options: WebOptions::default(),
            before: Box::new(|_| {}),
        }
    }
}

impl TestServer {
    pub fn start(setup: Setup, extra: impl FnOnce() -> Router<App>) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let site = mantissa_store::testing::open_site(&dir.path().join("site")).unwrap();
        (setup.before)(&site);
        let guard = Guard::new(setup.limits);
        let app = App::new(site.clone(), guard.clone(), setup.options).unwrap();
        let router = app.router_with(extra());
        TestServer::serve(dir, site, app, router, guard)
    }

    /// Serves `router` (built by the caller from `app`) on 127.0.0.1.
    pub fn serve(
        dir: tempfile::TempDir,
        site: Site,
        app: App,
        router: WebService,
        guard: Guard,
    ) -> TestServer {
        // What the server logs (a 500's cause, above all), in the failing
        // test's output when the run sets RUST_LOG.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
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
                        None,
                        Arc::new(HttpProtocol::new(router)),
                    )
                    .await
                    .unwrap();
                addr_tx.send(addr).unwrap();
                server
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        TestServer {
            addr,
            site,
            app,
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops gracefully and waits for the server to finish.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    pub fn get(&self, path: &str) -> Response {
        self.send(&format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        ))
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.get_from(None, path, headers)
    }

    /// A GET sent from the loopback address `from` (any of 127.0.0.0/8),
    /// or from 127.0.0.1.
    pub fn get_from(&self, from: Option<IpAddr>, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.send_from(from, &req)
    }

    pub fn post_form(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        self.post_form_from(None, path, headers, body)
    }

    /// A form POST sent from the loopback address `from`, or from 127.0.0.1.
    pub fn post_form_from(
        &self,
        from: Option<IpAddr>,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.send_from(from, &request_text(self.addr, "POST", path, &all, body))
    }

    pub fn send(&self, raw: &str) -> Response {
        send_raw(self.addr, raw.as_bytes())
    }

    /// Sends `raw` from the loopback address `from`, or from 127.0.0.1.
    pub fn send_from(&self, from: Option<IpAddr>, raw: &str) -> Response {
        match from {
            Some(ip) => send_raw_from(ip, self.addr, raw.as_bytes()),
            None => send_raw(self.addr, raw.as_bytes()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The text of one request to `addr` that closes the connection after
/// it: `headers`, then `body` with its length.
pub fn request_text(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    req
}

pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse(&buf)
}

/// A connection to `addr` from `from`: every address of 127.0.0.0/8 is the
/// loopback interface's on Linux, so a test can be many visitors (and the
/// server's per-address limits see them apart).
pub fn connect_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        socket.connect(addr).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// [`send_raw`] from the loopback address `from`.
pub fn send_raw_from(from: IpAddr, addr: SocketAddr, raw: &[u8]) -> Response {
    let mut s = connect_from(from, addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse(&buf)
}

pub fn parse(buf: &[u8]) -> Response {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let raw_body = &buf[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// The value of `name` in a response's Set-Cookie headers.
pub fn set_cookie<'r>(r: &'r Response, name: &str) -> Option<&'r str> {
    r.headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
}

pub fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string()
}

/// A browser's cookie jar, for one visitor (from 127.0.0.1, or from the
/// loopback address of [`Visitor::at`]).
#[derive(Default)]
pub struct Visitor {
    cookies: Vec<(String, String)>,
    from: Option<IpAddr>,
}

impl Visitor {
    /// A visitor whose requests come from `ip` (in 127.0.0.0/8).
    pub fn at(ip: &str) -> Visitor {
        Visitor {
            cookies: Vec::new(),
            from: Some(ip.parse().expect("an IP address")),
        }
    }

    pub fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn keep(&mut self, r: &Response) {
        for c in r.headers_named("set-cookie") {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !attrs.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn get(&mut self, s: &TestServer, path: &str) -> Response {
        let r = s.get_from(self.from, path, &[("Cookie", &self.header())]);
        self.keep(&r);
        r
    }

    /// Follows the redirect `r` answered with (a form's POST-redirect-GET):
    /// the page at its `Location`, without the fragment, which a browser
    /// keeps to itself.
    pub fn follow(&mut self, s: &TestServer, r: &Response) -> Response {
        let to = r
            .header("location")
            .unwrap_or_else(|| panic!("not a redirect ({}): {}", r.status, r.text()));
        let path = to.split('#').next().unwrap_or_default().to_string();
        self.get(s, &path)
    }

    /// Loads the form page first (for its CSRF token), then posts to it.
    pub fn submit(
        &mut self,
        s: &TestServer,
        form_page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> Response {
        let body = self.form_body(s, form_page, fields);
        self.post(s, action, &body)
    }

    /// The body that [`Visitor::submit`] would post: the form page's CSRF
    /// token (loaded now) and `fields`, URL-encoded.
    pub fn form_body(
        &mut self,
        s: &TestServer,
        form_page: &str,
        fields: &[(&str, &str)],
    ) -> String {
        let page = self.get(s, form_page);
        let token = page
            .text()
            .split("name=\"csrf_token\" value=\"")
            .nth(1)
            .map(|t| t.split('"').next().unwrap().to_string())
            .unwrap_or_else(|| panic!("no form on {form_page}: {}", page.text()));
        let mut body = format!("csrf_token={token}");
        for (k, v) in fields {
            body.push('&');
            body.push_str(&serde_urlencoded::to_string([(k, v)]).unwrap());
        }
        body
    }

    /// Posts a prepared form `body` (see [`Visitor::form_body`]).
    pub fn post(&mut self, s: &TestServer, action: &str, body: &str) -> Response {
        let r = s.post_form_from(self.from, action, &[("Cookie", &self.header())], body);
        self.keep(&r);
        r
    }
}

/// Text as a browser shows it: character references decoded (`&amp;`
/// and the other named ones too).
pub fn shown(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(i) = rest.find("&#") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let number = |t: &str| match t.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => t.parse::<u32>().ok(),
        };
        match after
            .find(';')
            .and_then(|j| Some((j, number(&after[..j])?)))
        {
            Some((j, n)) => {
                out.push(char::from_u32(n).unwrap_or('?'));
                rest = &after[j + 1..];
            }
            None => {
                out.push_str("&#");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

pub fn link_in(mail: &str) -> String {
    let start = mail.find("http://").expect("a link in the mail");
    mail[start..].split_whitespace().next().unwrap().to_string()
}

pub fn path_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    format!("/{}", rest.split_once('/').unwrap().1)
}
