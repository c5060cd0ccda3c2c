//! Hostile input (issue 8, item 6): about a thousand malformed requests of every shape the
//! fuzzers know — bad UTF-8 in the query, form and headers, huge headers, bodies over the
//! limit, invalid JSON, broken HTTP framing, truncated TLS handshakes, garbage bytes — and
//! slow-loris connections, against a running server. Each is answered with a 4xx or
//! closed, never a 5xx; well-formed requests keep succeeding meanwhile; memory stays
//! bounded.

use crate::support::*;
use mgpass::admin::Command;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

/// How long one hostile request may take before the server counts as hanging on it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The server's header-read and handshake timeouts are 10 s; a slow connection must be
/// closed within this.
const SLOW_CLOSE_BOUND: Duration = Duration::from_secs(15);
/// Garbage may look like the start of a request head: the server then waits for the rest
/// until its 10 s header timeout.
const HEAD_PATIENCE: Duration = Duration::from_secs(12);
const MIB: u64 = 1024 * 1024;

/// What became of one hostile request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Status(u16),
    Closed,
    Hung,
}

#[derive(Clone, Copy, Debug)]
enum Via {
    /// HTTP/1.1 over TLS.
    Tls,
    /// HTTP/2 negotiated by ALPN, then the bytes.
    TlsH2,
    /// Raw TCP: the bytes, then our write side closes.
    Tcp,
}

struct Case {
    label: String,
    via: Via,
    bytes: Vec<u8>,
    /// Close our write side after sending (a truncated request).
    then_close: bool,
    /// How long the server may take: [`ANSWER_TIMEOUT`], or for bytes that may leave a
    /// request head unfinished, [`HEAD_PATIENCE`].
    patience: Duration,
}

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    h1: TlsConnector,
    h2: TlsConnector,
    client_hello: Arc<Vec<u8>>,
}

fn tls_config(cert_path: &std::path::Path, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert_path).expect("cert") {
        roots.add(cert.expect("pem")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

impl Target {
    fn new(server: &TestServer) -> Target {
        let h1 = tls_config(&server.cert_path, b"http/1.1");
        // A real ClientHello, to send truncated.
        let mut conn = rustls::ClientConnection::new(h1.clone(), "localhost".try_into().unwrap())
            .expect("client");
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).expect("client hello");
        Target {
            addr: server.addr,
            h1: TlsConnector::from(h1),
            h2: TlsConnector::from(tls_config(&server.cert_path, b"h2")),
            client_hello: Arc::new(hello),
        }
    }

    async fn send(&self, case: &Case) -> Outcome {
        let attempt = async {
            let tcp = TcpStream::connect(self.addr).await.ok()?;
            let _ = tcp.set_nodelay(true);
            let connector = match case.via {
                Via::Tcp => return Some(exchange(tcp, &case.bytes, case.then_close).await),
                Via::Tls => &self.h1,
                Via::TlsH2 => &self.h2,
            };
            let tls = connector
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .ok()?;
            Some(exchange(tls, &case.bytes, case.then_close).await)
        };
        match tokio::time::timeout(case.patience, attempt).await {
            Ok(Some(outcome)) => outcome,
            // Refused before or during the handshake.
            Ok(None) => Outcome::Closed,
            Err(_) => Outcome::Hung,
        }
    }
}

/// Writes `bytes` (the server may close midway), then reads the status line or the end
/// of the connection.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    bytes: &[u8],
    then_close: bool,
) -> Outcome {
    for chunk in bytes.chunks(16 * 1024) {
        if s.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = s.flush().await;
    if then_close {
        let _ = s.shutdown().await;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if buf.starts_with(b"HTTP/") && buf.windows(2).any(|w| w == b"\r\n") {
            let code = std::str::from_utf8(buf.get(9..12).unwrap_or_default())
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            return Outcome::Status(code);
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return Outcome::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An HTTP/1.1 request; `Content-Length` is added for a body unless `headers` frame it.
fn request(method: &str, target: &[u8], headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(method.as_bytes());
    r.push(b' ');
    r.extend_from_slice(target);
    r.extend_from_slice(b" HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    let framed = headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    for (k, v) in headers {
        r.extend_from_slice(k.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(v);
        r.extend_from_slice(b"\r\n");
    }
    if !framed && !body.is_empty() {
        r.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

/// A small deterministic generator, so a failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Bytes that are not valid UTF-8 (every one at or above 0x80, starting with a
    /// continuation byte).
    fn bad_utf8(&mut self, n: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..n.max(1)).map(|_| 0x80 | self.next() as u8).collect();
        v[0] = 0x80 | (v[0] & 0x3f);
        v
    }
    fn bytes_upto(&mut self, max: usize) -> Vec<u8> {
        let n = 1 + self.below(max);
        self.bytes(n)
    }
    fn bad_utf8_upto(&mut self, max: usize) -> Vec<u8> {
        let n = 1 + self.below(max);
        self.bad_utf8(n)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

const FORM: (&str, &[u8]) = ("content-type", b"application/x-www-form-urlencoded");
const JSON: (&str, &[u8]) = ("content-type", b"application/json");

/// Every malformed request, about a thousand.
fn cases(target: &Target, api_key: &str, admin: &str, user_id: &str) -> Vec<Case> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    let mut add = |label: String, via: Via, bytes: Vec<u8>, then_close: bool| {
        let unfinished_head = ["framing", "tls garbage", "h2 garbage"]
            .iter()
            .any(|p| label.starts_with(p));
        out.push(Case {
            label,
            via,
            bytes,
            then_close,
            patience: if unfinished_head {
                HEAD_PATIENCE
            } else {
                ANSWER_TIMEOUT
            },
        })
    };
    let get_routes = [
        "/authorize",
        "/api/userinfo",
        "/api/logout",
        "/api/account/profile",
    ];
    let form_routes = [
        "/authorize",
        "/login",
        "/consent",
        "/api/token",
        "/api/revoke",
        "/api/introspect",
        "/api/logout",
    ];
    let bearer = format!("Bearer {admin}");
    let admin_auth: (&str, &[u8]) = ("authorization", bearer.as_bytes());
    let key: (&str, &[u8]) = ("x-api-key", api_key.as_bytes());

    // Bad UTF-8 in the query: raw bytes (refused by the HTTP parser) and percent-encoded
    // (decoded by ours).
    for i in 0..60 {
        let route = get_routes[i % get_routes.len()];
        let bad = rng.bad_utf8_upto(40);
        let mut t = format!("{route}?client_id=").into_bytes();
        t.extend_from_slice(&bad);
        add(
            format!("raw bad utf-8 query {route}"),
            Via::Tls,
            request("GET", &t, &[], b""),
            false,
        );
    }
    for i in 0..80 {
        let route = get_routes[i % get_routes.len()];
        let bad = pct(&rng.bad_utf8_upto(40));
        // A sign-out with unknown parameters is a plain sign-out page (200): give it a
        // hint it must check.
        let name = if route == "/api/logout" {
            "id_token_hint"
        } else {
            rng.pick(&["client_id", "redirect_uri", "access_token", "scope"])
        };
        let q = format!("{route}?{name}={bad}&{bad}={bad}&state={bad}");
        add(
            format!("encoded bad utf-8 query {q}"),
            Via::Tls,
            request("GET", q.as_bytes(), &[], b""),
            false,
        );
    }
    // Bad UTF-8 and junk in form bodies.
    for i in 0..120 {
        let route = form_routes[i % form_routes.len()];
        let name: &[u8] = if route == "/api/logout" {
            b"id_token_hint="
        } else {
            b"client_id="
        };
        let mut body = name.to_vec();
        match i % 4 {
            0 => body.extend_from_slice(&rng.bad_utf8_upto(200)),
            1 => body.extend_from_slice(pct(&rng.bad_utf8_upto(100)).as_bytes()),
            2 if route != "/api/logout" => body = rng.bytes_upto(500),
            _ => body.extend_from_slice(b"a&client_id=b&%%%&=&==&grant_type=%zz"),
        }
        add(
            format!("bad form body {route} #{i}"),
            Via::Tls,
            request("POST", route.as_bytes(), &[FORM], &body),
            false,
        );
    }
    // Bad UTF-8 in headers our code reads.
    for i in 0..120 {
        let bad = rng.bad_utf8_upto(60);
        let (route, method, name): (&str, &str, &str) = *rng.pick(&[
            ("/api/userinfo", "GET", "authorization"),
            ("/api/account/profile", "GET", "authorization"),
            ("/api/partner/events", "POST", "x-api-key"),
            ("/api/token", "POST", "authorization"),
            ("/api/token", "POST", "content-type"),
            ("/authorize", "GET", "cookie"),
            ("/login", "POST", "cookie"),
            ("/api/userinfo", "GET", "x-forwarded-for"),
            ("/api/partner/events", "POST", "x-forwarded-for"),
        ]);
        let mut value = match name {
            "authorization" => b"Bearer ".to_vec(),
            "cookie" => b"mgpass_session=".to_vec(),
            _ => Vec::new(),
        };
        value.extend_from_slice(&bad);
        let body: &[u8] = if method == "POST" {
            b"grant_type=x"
        } else {
            b""
        };
        add(
            format!("bad utf-8 header {name} on {route} #{i}"),
            Via::Tls,
            request(method, route.as_bytes(), &[(name, &value), FORM], body),
            false,
        );
    }
    // Huge headers, many headers, a huge request line: all past the 64 KiB limit.
    for i in 0..30 {
        let bytes = match i % 5 {
            0 => request(
                "GET",
                b"/jwks.json",
                &[("x-big", &vec![b'a'; 70 * 1024])],
                b"",
            ),
            1 => {
                let cookie = format!("mgpass_session={}", "b".repeat(70 * 1024));
                request("GET", b"/authorize", &[("cookie", cookie.as_bytes())], b"")
            }
            2 => {
                let mut r = b"GET /jwks.json HTTP/1.1\r\nhost: localhost\r\n".to_vec();
                for n in 0..1000 {
                    r.extend_from_slice(format!("x-h{n}: {}\r\n", "c".repeat(80)).as_bytes());
                }
                r.extend_from_slice(b"\r\n");
                r
            }
            3 => {
                let t = format!("/authorize?state={}", "d".repeat(70 * 1024));
                request("GET", t.as_bytes(), &[], b"")
            }
            _ => request(
                "GET",
                b"/jwks.json",
                &[("x-bad", &rng.bad_utf8(70 * 1024))],
                b"",
            ),
        };
        add(format!("huge headers #{i}"), Via::Tls, bytes, false);
    }
    // Bodies over the 64 KiB limit, announced or chunked, and lying lengths.
    for i in 0..40 {
        let route = *rng.pick(&[
            "/api/token",
            "/api/partner/events",
            "/login",
            "/api/introspect",
        ]);
        let big = vec![b'x'; 70 * 1024];
        let (bytes, then_close) = match i % 5 {
            0 => (request("POST", route.as_bytes(), &[FORM, key], &big), false),
            1 => {
                let mut body = Vec::new();
                for part in big.chunks(8192) {
                    body.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    body.extend_from_slice(part);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(b"0\r\n\r\n");
                (
                    request(
                        "POST",
                        route.as_bytes(),
                        &[JSON, key, ("transfer-encoding", b"chunked")],
                        &body,
                    ),
                    false,
                )
            }
            2 => (
                request(
                    "POST",
                    route.as_bytes(),
                    &[JSON, key, ("content-length", b"999999999999")],
                    &big,
                ),
                false,
            ),
            // Announces more than it sends, then closes.
            3 => (
                request(
                    "POST",
                    route.as_bytes(),
                    &[FORM, ("content-length", b"5000")],
                    b"grant_type=",
                ),
                true,
            ),
            _ => (
                request(
                    "POST",
                    route.as_bytes(),
                    &[JSON, key, ("content-length", b"18446744073709551616")],
                    b"{}",
                ),
                false,
            ),
        };
        add(
            format!("oversized body {route} #{i}"),
            Via::Tls,
            bytes,
            then_close,
        );
    }
    // Invalid JSON to the JSON endpoints: partner events (with a valid key) and the
    // rewards plugin's routes (with an admin token), and the public cashback callback.
    let valid_event = format!(
        r#"{{"user_id":"{user_id}","event_type":"purchase","metadata":{{"reference_id":"r1","amount":10}}}}"#
    );
    let fixed: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"str\"".to_vec(),
        b"1e99999".to_vec(),
        b"NaN".to_vec(),
        b"{\"user_id\":\"\\ud800\"}".to_vec(),
        b"\xef\xbb\xbf{}".to_vec(),
        b"{\"user_id\":\"u\",\"user_id\":5}".to_vec(),
        b"{\"user_id\":\"\xff\xfe\"}".to_vec(),
        "[".repeat(30_000).into_bytes(),
        "{\"a\":".repeat(10_000).into_bytes(),
        format!("{{\"user_id\":\"{}\"}}", "u".repeat(60_000)).into_bytes(),
        br#"{"user_id":"u","event_type":"purchase","metadata":{"reference_id":"r","amount":-1}}"#
            .to_vec(),
        br#"{"user_id":"u","event_type":"nope","metadata":{"reference_id":"r"}}"#.to_vec(),
        br#"{"user_id":"nobody","event_type":"purchase","metadata":{"reference_id":"r2"}}"#
            .to_vec(),
        br#"{"name":5,"points":"many","event_type":[],"conditions":{"x":{}}}"#.to_vec(),
        br#"{"points":1e308,"reason":null}"#.to_vec(),
        br#"{"points":-9223372036854775809,"reason":"x"}"#.to_vec(),
        br#"{"amount":"ten","cashback_ID":7}"#.to_vec(),
    ];
    let adjust = format!("/api/rewards/users/{user_id}/adjust");
    type Header<'a> = (&'a str, &'a [u8]);
    let json_routes: Vec<(&str, String, Vec<Header>)> = vec![
        ("POST", "/api/partner/events".into(), vec![JSON, key]),
        ("POST", "/api/rewards/rules".into(), vec![JSON, admin_auth]),
        (
            "PUT",
            "/api/rewards/rules/rule_x".into(),
            vec![JSON, admin_auth],
        ),
        ("POST", adjust, vec![JSON, admin_auth]),
        (
            "POST",
            "/api/account/cashback/redeem".into(),
            vec![JSON, admin_auth],
        ),
        (
            "POST",
            "/api/cashback/callback".into(),
            vec![JSON, ("x-signature", b"sha256=00")],
        ),
    ];
    for i in 0..240 {
        let (method, route, headers) = &json_routes[i % json_routes.len()];
        let body = match (i / json_routes.len()) % 4 {
            0 => fixed[(i / json_routes.len() / 4) % fixed.len()].clone(),
            1 => valid_event.as_bytes()[..rng.below(valid_event.len())].to_vec(),
            2 => rng.bytes_upto(2000),
            _ => {
                let mut b = valid_event.clone().into_bytes();
                let at = rng.below(b.len());
                b[at] = rng.next() as u8;
                b
            }
        };
        add(
            format!("invalid json {method} {route} #{i}"),
            Via::Tls,
            request(method, route.as_bytes(), headers, &body),
            false,
        );
    }
    // Broken HTTP framing.
    let framing: Vec<Vec<u8>> = vec![
        b"G\0T / HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        b"GET /\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\nhost: x\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nno-colon-here\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nhost : x\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nx: a\0b\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nx: a\r\n folded\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\nhost: x\n\n\x01\x02".to_vec(),
        b"POST /api/token HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"POST /api/token HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nabcdef".to_vec(),
        b"POST /api/token HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n".to_vec(),
        b"POST /api/token HTTP/1.1\r\nhost: x\r\ncontent-length: 1x\r\n\r\n".to_vec(),
        b"POST /api/token HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(),
        b"POST /api/token HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\nabc".to_vec(),
        b"POST /api/token HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\n".to_vec(),
        b"GET http://[::1 HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        b"GET //\xff/ HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        format!("{} / HTTP/1.1\r\nhost: x\r\n\r\n", "M".repeat(5000)).into_bytes(),
        b"FOO /jwks.json HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        b"DELETE /api/token HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        b"CONNECT localhost:443 HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        b"OPTIONS * HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        b"GET /api/../../etc/passwd HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        b"\r\n\r\n\r\n\r\n".to_vec(),
    ];
    for i in 0..150 {
        let mut bytes = framing[i % framing.len()].clone();
        if i >= framing.len() {
            // Mutations of the fixed cases.
            let at = rng.below(bytes.len());
            bytes[at] = rng.next() as u8;
        }
        add(
            format!(
                "framing #{i}: {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
            ),
            Via::Tls,
            bytes,
            false,
        );
    }
    // Garbage after a TLS handshake, over HTTP/1.1 and HTTP/2.
    for i in 0..50 {
        let n = 1 + rng.below(3000);
        add(format!("tls garbage #{i}"), Via::Tls, rng.bytes(n), false);
    }
    for i in 0..20 {
        let mut b = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        if i % 2 == 0 {
            b.extend_from_slice(&rng.bytes_upto(500));
        } else {
            // A HEADERS frame whose block is junk.
            b.extend_from_slice(&[0, 0, 8, 1, 5, 0, 0, 0, 1]);
            b.extend_from_slice(&rng.bytes(8));
        }
        add(format!("h2 garbage #{i}"), Via::TlsH2, b, false);
    }
    // Plain bytes on the TLS port: garbage, HTTP, fake TLS records.
    for i in 0..40 {
        let mut b = rng.bytes_upto(2000);
        match i % 4 {
            0 => b[0] = 0x16,
            1 => b = request("GET", b"/jwks.json", &[], b""),
            _ => {}
        }
        add(format!("tcp garbage #{i}"), Via::Tcp, b, true);
    }
    // Truncated ClientHellos, then close.
    let hello = target.client_hello.clone();
    for i in 0..50 {
        let n = 1 + (i * 37) % (hello.len() - 1);
        add(
            format!("truncated client hello ({n} of {} bytes)", hello.len()),
            Via::Tcp,
            hello[..n].to_vec(),
            true,
        );
    }
    out
}

fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

enum Slow {
    /// TLS done, then a request head one byte at a time, never finished.
    TlsHead,
    /// TLS done, then nothing.
    TlsIdle,
    /// TLS done, a complete head announcing a body, then the body one byte at a time.
    TlsBody,
    /// Part of a ClientHello, then silence.
    PartialHello,
    /// A TCP connection that sends nothing.
    TcpIdle,
}

/// Opens a slow connection and returns how long the server took to close it (`None`:
/// still open after [`SLOW_CLOSE_BOUND`]).
async fn slow_connection(target: Target, kind: Slow) -> Option<Duration> {
    let started = Instant::now();
    let tcp = TcpStream::connect(target.addr).await.expect("connect");
    let run = async {
        match kind {
            Slow::TcpIdle => wait_closed(tcp, Vec::new()).await,
            Slow::PartialHello => {
                let part = target.client_hello[..target.client_hello.len() / 2].to_vec();
                wait_closed(tcp, vec![part]).await
            }
            Slow::TlsIdle | Slow::TlsHead | Slow::TlsBody => {
                let tls = target
                    .h1
                    .connect("localhost".try_into().unwrap(), tcp)
                    .await
                    .expect("handshake");
                let bytes = match kind {
                    Slow::TlsHead => b"GET /jwks.json HTTP/1.1\r\nhost: localhost\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                        .chunks(1)
                        .map(<[u8]>::to_vec)
                        .collect(),
                    Slow::TlsBody => {
                        let mut pieces = vec![
                            b"POST /api/token HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 1000\r\n\r\n".to_vec(),
                        ];
                        pieces.extend((0..100).map(|_| b"a".to_vec()));
                        pieces
                    }
                    _ => Vec::new(),
                };
                wait_closed(tls, bytes).await
            }
        }
    };
    tokio::time::timeout(SLOW_CLOSE_BOUND, run)
        .await
        .ok()
        .map(|_| started.elapsed())
}

/// Sends `pieces` 400 ms apart while waiting for the server to close the connection.
async fn wait_closed<S: AsyncRead + AsyncWrite + Unpin>(s: S, pieces: Vec<Vec<u8>>) {
    let (mut r, mut w) = tokio::io::split(s);
    let writer = async move {
        for p in pieces {
            if w.write_all(&p).await.is_err() || w.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        std::future::pending::<()>().await;
    };
    let reader = async move {
        let mut buf = [0u8; 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // A 408 or an alert may precede the close.
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_or_close_and_the_server_keeps_serving() {
    let started = Instant::now();
    let server = TestServer::start().await;
    let partner = server
        .admin(Command::PartnerAdd(mgpass::partner::PartnerSpec {
            name: Some("Shop".into()),
            event_types: Some(vec!["purchase".into()]),
            multiplier: None,
            webhook_url: None,
            enabled: None,
        }))
        .await
        .expect("partner");
    let api_key = partner["api_key"].as_str().expect("api key").to_string();
    let admin = admin_token(&server).await;
    let user_id = server
        .add_user("hostile-target", "correct-horse-9", &[])
        .await;
    let target = Target::new(&server);
    let cases = cases(&target, &api_key, &admin, &user_id);
    assert!(cases.len() >= 1000, "{} cases", cases.len());

    // Warm up, then take the memory baseline.
    let http = server.http();
    for _ in 0..5 {
        let r = http.get(server.url("/jwks.json")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let rss_before = vm_rss();

    // Slow connections run alongside the burst.
    let slow: Vec<_> = (0..20)
        .map(|i| {
            let kind = match i % 5 {
                0 => Slow::TlsHead,
                1 => Slow::TlsIdle,
                2 => Slow::PartialHello,
                3 => Slow::TcpIdle,
                _ => Slow::TlsBody,
            };
            tokio::spawn(slow_connection(target.clone(), kind))
        })
        .collect();

    // Well-formed requests keep succeeding meanwhile: a keep-alive client and, every
    // tenth request, a fresh connection.
    let done = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let checker = {
        let (done, ok, bad) = (done.clone(), ok.clone(), bad.clone());
        let (url, builder) = (server.url("/jwks.json"), server.http());
        let fresh = (server.cert_path.clone(), server.addr);
        tokio::spawn(async move {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let client = if n % 10 == 0 {
                    client_builder(&fresh.0, fresh.1).build().unwrap()
                } else {
                    builder.clone()
                };
                let resp = tokio::time::timeout(ANSWER_TIMEOUT, client.get(&url).send()).await;
                match resp {
                    Ok(Ok(r)) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    // The burst: 16 at a time.
    let burst_started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(16));
    let mut set = tokio::task::JoinSet::new();
    let total = cases.len();
    for case in cases {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let target = target.clone();
        set.spawn(async move {
            let outcome = target.send(&case).await;
            drop(permit);
            (case.label, outcome)
        });
    }
    let mut failures = Vec::new();
    let (mut answered, mut closed) = (0, 0);
    while let Some(joined) = set.join_next().await {
        let (label, outcome) = joined.expect("task");
        match outcome {
            Outcome::Status(s) if (400..500).contains(&s) => answered += 1,
            Outcome::Closed => closed += 1,
            other => failures.push(format!("{label}: {other:?}")),
        }
    }
    let burst = burst_started.elapsed();

    let mut slow_closed = Vec::new();
    for (i, handle) in slow.into_iter().enumerate() {
        match handle.await.expect("slow task") {
            Some(after) => slow_closed.push(after),
            None => failures.push(format!(
                "slow connection {i} (kind {}) still open after {SLOW_CLOSE_BOUND:?}",
                i % 5
            )),
        }
    }
    done.store(true, Ordering::Relaxed);
    checker.await.unwrap();

    // Still serving, and memory bounded.
    let r = server
        .http()
        .get(server.url("/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rss_after = vm_rss();
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "hostile: {total} malformed requests in {burst:?} ({answered} answered 4xx, {closed} closed), \
         {} slow connections closed after {:?}..{:?}, {} well-formed ok / {} failed, \
         VmRSS {} -> {} MiB, total {:?}",
        slow_closed.len(),
        slow_closed.iter().min(),
        slow_closed.iter().max(),
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        rss_before / MIB,
        rss_after / MIB,
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "well-formed requests failed"
    );
    assert!(
        ok.load(Ordering::Relaxed) >= 10,
        "too few well-formed checks ran"
    );
    assert!(growth < 200 * MIB, "VmRSS grew by {} MiB", growth / MIB);
}
