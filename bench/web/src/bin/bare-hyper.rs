//! Bare hyper 1 (HTTP/1.1 only, `hyper_util::rt::TokioIo`): answers every
//! request with `Hello, World!`. The ceiling for the plaintext test.
//!
//! ```text
//! bare-hyper [ADDR]
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, header};
use hyper_util::rt::TokioIo;
use mantissa_bench_web::{HELLO, listen_arg, stop_signal};

async fn hello(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut r = Response::new(Full::new(Bytes::from_static(HELLO.as_bytes())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(r)
}

fn main() -> anyhow::Result<()> {
    let addr = listen_arg("127.0.0.1:8083")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("bare-hyper on http://{addr}/");
        let stop = stop_signal();
        tokio::pin!(stop);
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => a?,
                _ = &mut stop => break,
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(hello))
                    .await;
            });
        }
        anyhow::Ok(())
    })
}
