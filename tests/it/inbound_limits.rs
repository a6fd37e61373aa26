//! SPEC.md "Inbound limits" over real TCP: header-read and idle timeouts, the body
//! limit, the connection bound, the panic guard, the shutdown deadline. Raw sockets
//! where a client must misbehave in ways an HTTP client library will not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode as AxumStatus;
use axum::routing::get;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

use crate::helpers::{MEMORY_STORE, SECRET, TestApp, TestSim, seed_config, wait_until};

/// The tests' config with `lines` added to `[server]`.
fn config(sim: &TestSim, lines: &str) -> String {
    seed_config(sim.addr, MEMORY_STORE, "").replace("[server]\n", &format!("[server]\n{lines}\n"))
}

/// A server with `lines` in `[server]`, not waiting for its tokens.
async fn start(lines: &str) -> TestApp {
    let sim = TestSim::start(Default::default()).await;
    let text = config(&sim, lines);
    TestApp::start(sim, &text).await
}

/// Longest wait for something that should happen at once, or after a 1 s timeout.
const DEADLINE: Duration = Duration::from_secs(10);

/// A raw HTTP/1.1 connection; keeps what it read past one response for the next.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(app: &TestApp) -> Self {
        let addr = app.base.strip_prefix("http://").unwrap();
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// `GET path` on this connection (kept alive).
    async fn get(&mut self, path: &str) -> (u16, String) {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .await;
        self.response().await
    }

    /// Reads one response with a Content-Length: status and body. Cancel-safe: bytes
    /// read before a cancellation stay in `buf`.
    async fn response(&mut self) -> (u16, String) {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no Content-Length in {head}"));
        while self.buf.len() < head_end + length {
            self.fill().await;
        }
        let body = String::from_utf8_lossy(&self.buf[head_end..head_end + length]).into_owned();
        self.buf.drain(..head_end + length);
        (status, body)
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a whole response");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Waits until the server closes the connection (EOF, or a reset when it closed
    /// with bytes unread); returns how long that took. Panics after [`DEADLINE`].
    async fn closed(mut self) -> Duration {
        let started = Instant::now();
        let closed = tokio::time::timeout(DEADLINE, async {
            let mut chunk = [0u8; 4096];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server kept the connection open");
        started.elapsed()
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let app = start("header_read_timeout = 1").await;
    // Half a head, and a connection that says nothing at all.
    let mut half = Raw::connect(&app).await;
    half.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\n").await;
    let silent = Raw::connect(&app).await;
    let (half, silent) = tokio::join!(half.closed(), silent.closed());
    for waited in [half, silent] {
        assert!(
            waited >= Duration::from_millis(500),
            "closed too soon: {waited:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = start("idle_timeout = 1").await;
    let mut raw = Raw::connect(&app).await;
    assert_eq!(raw.get("/healthz").await.0, 200);
    let waited = raw.closed().await;
    assert!(
        waited >= Duration::from_millis(500),
        "closed too soon: {waited:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_not_cut_by_the_shorter_header_timeout() {
    // The idle timeout (60 s by default) is the longer one: pools that keep a
    // connection a little while must find it open.
    let app = start("header_read_timeout = 0.3\nidle_timeout = 30").await;
    let mut raw = Raw::connect(&app).await;
    assert_eq!(raw.get("/healthz").await.0, 200);
    // Idle for more than three header timeouts: the duration under test.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(raw.get("/healthz").await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_declared_body_over_64_kib_gets_413_at_once_without_being_sent() {
    let app = start("").await;
    for (request, error) in [
        (
            format!(
                "POST /v1/tokens/default/access_token/refresh HTTP/1.1\r\nHost: test\r\n\
                 Authorization: Bearer {SECRET}\r\nContent-Length: 20000000\r\n\r\n"
            ),
            "payload_too_large",
        ),
        (
            "GET /wechat/token?type=access_token HTTP/1.1\r\nHost: test\r\n\
             Content-Length: 20000000\r\n\r\n"
                .to_owned(),
            "payload too large",
        ),
    ] {
        let mut raw = Raw::connect(&app).await;
        raw.send(request.as_bytes()).await;
        // Well before any timeout: the body is never sent.
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), raw.response())
            .await
            .expect("413 comes without the body");
        assert_eq!(status, 413, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], error);
    }
    app.stop().await;
}

/// `body` in chunks of 8 KiB, chunked transfer encoding.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(8192) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test]
async fn a_chunked_body_over_64_kib_gets_413_and_a_small_one_is_served() {
    let sim = TestSim::start(Default::default()).await;
    let text = config(&sim, "");
    let app = TestApp::spawn_with(sim, &text).await;
    let head = format!(
        "POST /v1/tokens/default/access_token/refresh HTTP/1.1\r\nHost: test\r\n\
         Authorization: Bearer {SECRET}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );

    let stale = format!("{{\"stale\": \"{}\"}}", "x".repeat(100_000));
    let mut raw = Raw::connect(&app).await;
    raw.send(&[head.as_bytes(), &chunked(stale.as_bytes())].concat())
        .await;
    let (status, body) = raw.response().await;
    assert_eq!(status, 413, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "payload_too_large");

    let mut raw = Raw::connect(&app).await;
    raw.send(&[head.as_bytes(), &chunked(b"{\"stale\": \"not-the-token\"}")].concat())
        .await;
    let (status, body) = raw.response().await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn connections_past_max_connections_wait_until_one_closes() {
    let app = start("max_connections = 2").await;
    let mut first = Raw::connect(&app).await;
    let mut second = Raw::connect(&app).await;
    assert_eq!(first.get("/healthz").await.0, 200);
    assert_eq!(second.get("/healthz").await.0, 200);

    // The third connects (the kernel queues it) but is not served...
    let mut third = Raw::connect(&app).await;
    third
        .send(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let waiting = tokio::time::timeout(Duration::from_millis(500), third.response()).await;
    assert!(waiting.is_err(), "served past max_connections");
    // ...while the open ones keep working.
    assert_eq!(first.get("/healthz").await.0, 200);
    assert_eq!(second.get("/healthz").await.0, 200);

    // One closes: the waiting one is accepted and answered.
    drop(first);
    let (status, _) = tokio::time::timeout(DEADLINE, third.response())
        .await
        .expect("served once a connection closed");
    assert_eq!(status, 200);
    app.stop().await;
}

async fn panics() -> AxumStatus {
    panic!("a handler bug (the test's own route)")
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    let sim = TestSim::start(Default::default()).await;
    let text = config(&sim, "");
    let routes = Router::new()
        .route("/test/panic", get(panics))
        .route("/v1/test/panic", get(panics));
    let app = TestApp::start_with_routes(sim, &text, routes).await;
    for (path, error) in [
        ("/test/panic", "internal error"),
        ("/v1/test/panic", "internal_error"),
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("an answer, not a dropped connection");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error);
        // The same client (its kept-alive connection) is served next.
        assert_eq!(app.page("/healthz").await.0, StatusCode::OK);
    }
    app.stop().await;
}

#[tokio::test]
async fn shutdown_ends_within_the_shutdown_timeout_while_a_client_holds_a_request_open() {
    let sim = TestSim::start(Default::default()).await;
    let text = config(&sim, "shutdown_timeout = 1");
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<&'static str>();
    let release = Arc::new(Notify::new());
    let hang_tx = entered_tx.clone();
    let wait_release = release.clone();
    let routes = Router::new()
        // Never answers.
        .route(
            "/test/hang",
            get(move || async move {
                let _ = hang_tx.send("hang");
                std::future::pending::<()>().await;
                AxumStatus::OK
            }),
        )
        // Answers when released.
        .route(
            "/test/wait",
            get(move || async move {
                let _ = entered_tx.send("wait");
                wait_release.notified().await;
                AxumStatus::OK
            }),
        );
    let app = TestApp::start_with_routes(sim, &text, routes).await;
    let hang = tokio::spawn(app.client.get(format!("{}/test/hang", app.base)).send());
    let wait = tokio::spawn(app.client.get(format!("{}/test/wait", app.base)).send());
    for _ in 0..2 {
        tokio::time::timeout(DEADLINE, entered.recv())
            .await
            .expect("both requests reach their handlers");
    }

    let started = Instant::now();
    app.begin_stop();
    let addr = app.base.strip_prefix("http://").unwrap().to_owned();
    wait_until("the server stops accepting", DEADLINE, || {
        let addr = addr.clone();
        async move { TcpStream::connect(addr).await.is_err() }
    })
    .await;
    // A request that finishes during the shutdown is answered...
    release.notify_one();
    let answered = wait.await.unwrap().expect("answered during shutdown");
    assert_eq!(answered.status(), StatusCode::OK);
    // ...and the one held open is cut off at the deadline.
    app.stopped_within(Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "stopped before the deadline: {waited:?}"
    );
    assert!(hang.await.unwrap().is_err(), "the held request was closed");
}
