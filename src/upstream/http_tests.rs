//! The client against tiny local HTTP servers that misbehave in one way each: a huge
//! body, a redirect, a connection refused or dropped, no answer at all.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use crate::upstream::template::Template;

const SECRET: &str = "s3cret-in-the-query";
/// Far longer than any test should need: a test that waits this long has failed.
const DEADLINE: Duration = Duration::from_secs(10);
const FIFTY_MB: u64 = 50 * 1024 * 1024;

/// A loopback server: for each connection, reads the request head, then hands the
/// socket to `respond`. Returns its address and the number of connections it accepted.
async fn serve<F, Fut>(respond: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut buf = [0; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            tokio::spawn(respond(stream));
        }
    });
    (addr, hits)
}

/// A GET source with the secret in its query, on `addrs` in fallback order.
fn source(addrs: &[SocketAddr]) -> SourceConfig {
    SourceConfig {
        name: "access_token".into(),
        urls: addrs
            .iter()
            .map(|a| Url::parse(&format!("http://{a}/cgi-bin/token")).unwrap())
            .collect(),
        method: Method::GET,
        args: vec![
            ("appid".into(), Template::literal("wx1")),
            ("secret".into(), Template::literal(SECRET)),
        ],
        body: None,
        token_field: "access_token".into(),
        expires_field: "expires_in".into(),
        deps: Vec::new(),
        probe_urls: Vec::new(),
        replaces_previous: true,
        pushed: false,
        rotates: None,
        forced: None,
    }
}

async fn fetch_with(timeout: Duration, addrs: &[SocketAddr]) -> Result<Fetched, Error> {
    let upstream = Upstream::new(timeout).unwrap();
    tokio::time::timeout(DEADLINE, upstream.fetch(&source(addrs), &|_| None))
        .await
        .expect("the call ends well before the deadline")
}

async fn fetch(addrs: &[SocketAddr]) -> Result<Fetched, Error> {
    fetch_with(Duration::from_secs(30), addrs).await
}

async fn answer(mut stream: TcpStream, reply: &str) {
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A 200 with a token, as WeChat answers.
fn token_reply(token: &str) -> String {
    let body = format!(r#"{{"access_token":"{token}","expires_in":7200}}"#);
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_reply_that_grows_past_1_mib_is_refused_without_reading_the_rest() {
    let (written_tx, mut written_rx) = mpsc::unbounded_channel();
    let (addr, _) = serve(move |mut stream| {
        let written_tx = written_tx.clone();
        async move {
            // No content-length: the client learns the size only by reading.
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
            let chunk = vec![b' '; 64 * 1024];
            let mut written = 0u64;
            if stream.write_all(head.as_bytes()).await.is_ok() {
                while written < FIFTY_MB {
                    match stream.write(&chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => written += n as u64,
                    }
                }
            }
            let _ = written_tx.send(written);
        }
    })
    .await;

    let error = fetch(&[addr]).await.unwrap_err();
    assert!(
        matches!(&error, Error::Malformed(m) if m.contains("1 MiB")),
        "{error:?}"
    );
    assert!(error.may_have_issued());
    // The server stops when the client hangs up: what it managed to write is what the
    // client could ever have held, 1 MiB plus the sockets' buffers, not the 50 MB.
    let written = tokio::time::timeout(DEADLINE, written_rx.recv())
        .await
        .expect("the server learns that the client hung up")
        .unwrap();
    assert!(
        written < 16 * 1024 * 1024,
        "the client read {written} bytes"
    );

    // The limit is 1 MiB, not less: a reply of exactly that size is read.
    let (addr, _) = serve(|stream| async move {
        let json = r#"{"access_token":"T","expires_in":7200}"#;
        let body = format!("{json}{}", " ".repeat(MAX_REPLY_BYTES - json.len()));
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{body}"
        );
        answer(stream, &reply).await;
    })
    .await;
    assert_eq!(fetch(&[addr]).await.unwrap().value, "T");
}

#[tokio::test]
async fn a_reply_declaring_more_than_1_mib_is_refused_before_its_body_is_read() {
    // The body never comes: a client that waited for it would hang until its timeout.
    let (addr, _) = serve(|mut stream| async move {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {FIFTY_MB}\r\n\r\n"
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let mut sink = [0; 64];
        while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    let error = fetch_with(Duration::from_secs(60), &[addr])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Malformed(m) if m.contains("1 MiB")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_redirect_is_an_http_error_and_the_secret_goes_to_no_other_host() {
    let (elsewhere, hits) =
        serve(|stream| async move { answer(stream, &token_reply("T-B-1")).await }).await;
    for status in ["302 Found", "307 Temporary Redirect"] {
        let location = format!("http://{elsewhere}/cgi-bin/token?secret={SECRET}");
        let (addr, _) = serve(move |stream| {
            let reply = format!(
                "HTTP/1.1 {status}\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            async move { answer(stream, &reply).await }
        })
        .await;
        let error = fetch(&[addr]).await.unwrap_err();
        let code: u16 = status[..3].parse().unwrap();
        assert_eq!(error, Error::Status(code));
        assert!(error.may_have_issued(), "an HTTP status error counts");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
    // The other server does answer: the test would see a followed redirect succeed.
    assert_eq!(fetch(&[elsewhere]).await.unwrap().value, "T-B-1");
}

/// An address where nothing listens (a port just bound and released).
async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn a_refused_connection_is_connect_and_issued_nothing() {
    let error = fetch(&[refused_addr().await]).await.unwrap_err();
    assert!(matches!(error, Error::Connect(_)), "{error:?}");
    assert!(!error.may_have_issued());
    assert_eq!(error.outcome(), "unreachable");
    // The cause is kept: the reqwest error, and below it the refused connection.
    let Error::Connect(cause) = &error else {
        unreachable!()
    };
    assert!(cause.get_ref().downcast_ref::<reqwest::Error>().is_some());
    let mut root: &dyn std::error::Error = &error;
    while let Some(next) = root.source() {
        root = next;
    }
    assert!(
        root.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "root cause: {root:?}"
    );
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(SECRET), "the URL leaked: {shown}");
    }
}

#[tokio::test]
async fn a_connection_closed_after_the_request_is_transport_and_may_have_issued() {
    let (addr, _) = serve(|stream| async move { drop(stream) }).await;
    let error = fetch(&[addr]).await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error:?}");
    assert!(error.may_have_issued());
    assert_eq!(error.outcome(), "connection_lost");
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(SECRET), "the URL leaked: {shown}");
    }
}

#[tokio::test]
async fn an_unreachable_fallback_host_does_not_hide_that_the_first_may_have_issued() {
    let (dropping, _) = serve(|stream| async move { drop(stream) }).await;
    let error = fetch(&[dropping, refused_addr().await]).await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error:?}");
    assert!(error.may_have_issued());
}

#[tokio::test]
async fn an_errcode_from_a_fallback_host_does_not_hide_that_the_first_may_have_issued() {
    let (dropping, _) = serve(|stream| async move { drop(stream) }).await;
    let (busy, hits) = serve(|stream| async move {
        let body = r#"{"errcode":-1,"errmsg":"system error"}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        answer(stream, &reply).await;
    })
    .await;
    let error = fetch(&[dropping, busy]).await.unwrap_err();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the fallback host was asked"
    );
    assert!(matches!(error, Error::Transport(_)), "{error:?}");
    assert!(error.may_have_issued());
    // Alone, the busy host's answer is what the call returns.
    let error = fetch(&[busy]).await.unwrap_err();
    assert_eq!(error.errcode(), Some(-1));
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_a_timeout_that_may_have_issued() {
    let (addr, _) = serve(|mut stream| async move {
        let mut sink = [0; 64];
        while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    let error = fetch_with(Duration::from_millis(500), &[addr])
        .await
        .unwrap_err();
    assert_eq!(error, Error::Timeout);
    assert!(error.may_have_issued());
}

#[tokio::test]
async fn no_url_is_a_connect_error() {
    let error = fetch(&[]).await.unwrap_err();
    assert!(matches!(error, Error::Connect(_)), "{error:?}");
    assert!(!error.may_have_issued());
}
