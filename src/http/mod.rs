//! The HTTPS listener, request parsing, routing and response helpers.
//!
//! A connection whose first byte is not a TLS handshake gets `400 HTTPS required` and is
//! closed before any handler runs. Bodies are read up to a limit before routing, so
//! handlers see a complete [`Req`].

pub mod cookies;
pub mod error;
pub mod pages;
pub mod params;
mod plugin_route;
mod router;
pub mod tls;

pub use error::Error;

use crate::app::App;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use params::Params;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub type Resp = Response<Full<Bytes>>;

/// The largest request body any endpoint accepts.
pub const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to start its TLS handshake and finish it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's head (and, after the handshake, to
/// start its first request).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request body (at most [`MAX_BODY`]).
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A request with its body read.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: IpAddr,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(hyper::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|h| cookies::find(h, name))
    }

    pub fn query_params(&self) -> Result<Params, Error> {
        Params::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .map_err(Error::invalid_request)
    }

    /// Form parameters of a POST body; the content type must say so (RFC 6749 §3.2).
    pub fn form_params(&self) -> Result<Params, Error> {
        let ct = self.header("content-type").unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(Error::invalid_request(
                "content type must be application/x-www-form-urlencoded",
            ));
        }
        Params::parse(&self.body).map_err(Error::invalid_request)
    }

    /// Query for GET, form body for POST.
    pub fn params(&self) -> Result<Params, Error> {
        if self.method == Method::POST {
            self.form_params()
        } else {
            self.query_params()
        }
    }
}

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn html_response(status: StatusCode, html: String) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(html)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Pages carry forms and session state: never cached, never framed.
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https: http://127.0.0.1:* http://localhost:*; frame-ancestors 'none'"),
    );
    resp
}

/// `302 Found` to `location`.
pub fn redirect(location: &str) -> Result<Resp, Error> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    resp.headers_mut().insert(
        hyper::header::LOCATION,
        HeaderValue::from_str(location).map_err(Error::internal)?,
    );
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

pub fn add_header(resp: &mut Resp, name: &'static str, value: &str) -> Result<(), Error> {
    resp.headers_mut()
        .append(name, HeaderValue::from_str(value).map_err(Error::internal)?);
    Ok(())
}

async fn read_request(req: Request<Incoming>, peer: IpAddr) -> Result<Req, Error> {
    let (parts, body) = req.into_parts();
    // Without a deadline a client could hold the connection forever by sending less
    // body than it announced, or sending it a byte at a time.
    let body = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect())
        .await
        .map_err(|_| {
            Error::api(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            )
        })?
        .map_err(|e| {
            // One answer for every endpoint: the published partner API wants a 400 that
            // names the body, and no endpoint takes more.
            if e.is::<http_body_util::LengthLimitError>() {
                Error::bad_request(format!("body: must be at most {} KiB", MAX_BODY / 1024))
            } else {
                Error::bad_request("body: could not be read")
            }
        })?
        .to_bytes();
    Ok(Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
        peer,
    })
}

async fn handle(app: Arc<App>, req: Request<Incoming>, peer: IpAddr) -> Resp {
    let started = Instant::now();
    let method = req.method().clone();
    // The path only: query strings can carry codes and tokens.
    let path = req.uri().path().to_string();
    let resp = match read_request(req, peer).await {
        Ok(req) => router::route(&app, &req).await,
        Err(e) => Err(e),
    };
    let resp = resp.unwrap_or_else(Error::into_response);
    let elapsed = started.elapsed();
    app.metrics.request(
        router::route_label(&path),
        resp.status().as_u16(),
        elapsed.as_secs_f64(),
    );
    tracing::info!(
        %method,
        path = %path,
        status = resp.status().as_u16(),
        latency_us = elapsed.as_micros() as u64,
        "request"
    );
    resp
}

const HTTPS_REQUIRED: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 47\r\n\r\nHTTPS is required: this port only speaks TLS.\r\n";

async fn serve_connection(
    app: Arc<App>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    watcher: hyper_util::server::graceful::Watcher,
) {
    // A TLS connection starts with a handshake record (content type 22).
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => {
            let mut stream = stream;
            let _ = stream.write_all(HTTPS_REQUIRED).await;
            let _ = stream.shutdown().await;
            tracing::info!(peer = %peer.ip(), "plain HTTP refused: HTTPS required");
            return;
        }
        _ => return,
    }
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer.ip(), error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let first_request = Arc::new(tokio::sync::Notify::new());
    let seen = first_request.clone();
    let service = hyper::service::service_fn(move |req| {
        seen.notify_one();
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(app, req, peer.ip()).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The header timeout needs hyper to have a timer, or every HTTP/1 connection fails.
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    builder.http2().max_header_list_size(64 * 1024);
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(tls), service));
    tokio::pin!(conn);
    // hyper's header timeout starts only once the protocol is detected, i.e. at the first
    // byte: a connection that completes the handshake and then stays silent would be held
    // forever. The first request must arrive within the header timeout.
    let ended = tokio::select! {
        biased;
        ended = &mut conn => Some(ended),
        _ = first_request.notified() => None,
        _ = tokio::time::sleep(HEADER_TIMEOUT) => {
            tracing::debug!(peer = %peer.ip(), "no request after the handshake; closing");
            return;
        }
    };
    let ended = match ended {
        Some(ended) => ended,
        None => conn.await,
    };
    if let Err(e) = ended {
        tracing::debug!(peer = %peer.ip(), error = %e, "connection ended with an error");
    }
}

/// Accepts connections until `shutdown` resolves, then lets in-flight requests finish
/// for at most `grace`.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(
                    app.clone(),
                    stream,
                    peer,
                    acceptor.clone(),
                    graceful.watcher(),
                ));
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy, in which case
/// the right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(app: &App, req: &Req) -> IpAddr {
    forwarded_client(req.peer, &app.config.trusted_proxies, &req.headers)
}

pub fn forwarded_client(peer: IpAddr, trusted: &[IpAddr], headers: &HeaderMap) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        for part in value.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => chain.push(ip),
                // A malformed hop: trust nothing further left than the proxy itself.
                Err(_) => return peer,
            }
        }
    }
    chain
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let h = xff("1.2.3.4, 5.6.7.8");
        assert_eq!(forwarded_client(peer, &[proxy], &h), peer);
        assert_eq!(
            forwarded_client(proxy, &[proxy], &h),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        let h = xff("1.2.3.4, 10.0.0.1");
        assert_eq!(
            forwarded_client(proxy, &[proxy], &h),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(forwarded_client(proxy, &[proxy], &xff("junk")), proxy);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                proptest::sample::select(vec![
                    "10.0.0.1",
                    "10.0.0.2",
                    "::1",
                    "203.0.113.9",
                    "1.2.3.4",
                ])
                .prop_map(|s| s.parse().unwrap()),
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u8; 16]>().prop_map(IpAddr::from),
            ]
        }

        fn hop() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => ip().prop_map(|ip| ip.to_string()),
                1 => "[ -~]{0,20}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// The answer is the peer or an address the header names; never a trusted
            /// proxy unless the peer is one; an untrusted peer is never overridden.
            #[test]
            fn client_is_peer_or_from_header(
                peer in ip(),
                trusted in proptest::collection::vec(ip(), 0..3),
                values in proptest::collection::vec(proptest::collection::vec(hop(), 0..4), 0..3),
            ) {
                let mut headers = HeaderMap::new();
                let mut listed = Vec::new();
                for hops in &values {
                    let v = hops.join(", ");
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        headers.append("x-forwarded-for", v);
                        listed.extend(hops.iter().filter_map(|h| h.trim().parse::<IpAddr>().ok()));
                    }
                }
                let got = forwarded_client(peer, &trusted, &headers);
                if !trusted.contains(&peer) {
                    prop_assert_eq!(got, peer);
                } else if got != peer {
                    prop_assert!(listed.contains(&got));
                    prop_assert!(!trusted.contains(&got));
                }
            }
        }
    }
}
