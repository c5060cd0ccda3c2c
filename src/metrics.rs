//! Operational metrics, exposed in the Prometheus text format on a separate loopback
//! listener (`metrics_listen`, off by default).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    pub logins_throttled: AtomicU64,
    pub refresh_reuse: AtomicU64,
    pub deliveries_ok: AtomicU64,
    pub delivery_failures: AtomicU64,
    pub deliveries_given_up: AtomicU64,
    pub rate_limited: AtomicU64,
    tokens: Mutex<BTreeMap<&'static str, u64>>,
    requests: Mutex<BTreeMap<(&'static str, u16), Histogram>>,
    plugin_calls: Mutex<BTreeMap<(String, &'static str, bool), Histogram>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "{name}_bucket{{{labels},le=\"{bound}\"}} {}\n",
                self.counts[i]
            ));
        }
        out.push_str(&format!(
            "{name}_bucket{{{labels},le=\"+Inf\"}} {}\n",
            self.count
        ));
        out.push_str(&format!("{name}_sum{{{labels}}} {}\n", self.sum));
        out.push_str(&format!("{name}_count{{{labels}}} {}\n", self.count));
    }
}

impl Metrics {
    pub fn inc(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn token_issued(&self, grant: &'static str) {
        *lock(&self.tokens).entry(grant).or_default() += 1;
    }

    pub fn request(&self, route: &'static str, status: u16, seconds: f64) {
        lock(&self.requests)
            .entry((route, status))
            .or_default()
            .observe(seconds);
    }

    pub fn plugin_call(&self, plugin: &str, hook: &'static str, ok: bool, seconds: f64) {
        lock(&self.plugin_calls)
            .entry((plugin.to_string(), hook, ok))
            .or_default()
            .observe(seconds);
    }

    /// The Prometheus text exposition. `gauges` are values read at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, String, f64)]) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 8] = [
            ("mgpass_logins_total", "result=\"ok\"", &self.logins_ok),
            (
                "mgpass_logins_total",
                "result=\"failed\"",
                &self.logins_failed,
            ),
            (
                "mgpass_logins_total",
                "result=\"throttled\"",
                &self.logins_throttled,
            ),
            (
                "mgpass_refresh_reuse_detected_total",
                "",
                &self.refresh_reuse,
            ),
            (
                "mgpass_delivery_attempts_total",
                "result=\"ok\"",
                &self.deliveries_ok,
            ),
            (
                "mgpass_delivery_attempts_total",
                "result=\"failed\"",
                &self.delivery_failures,
            ),
            (
                "mgpass_deliveries_given_up_total",
                "",
                &self.deliveries_given_up,
            ),
            ("mgpass_rate_limited_total", "", &self.rate_limited),
        ];
        for (name, labels, value) in counters {
            out.push_str(&format!("{name}{{{labels}}} {}\n", Metrics::get(value)));
        }
        for (grant, n) in lock(&self.tokens).iter() {
            out.push_str(&format!(
                "mgpass_tokens_issued_total{{grant=\"{grant}\"}} {n}\n"
            ));
        }
        for ((route, status), h) in lock(&self.requests).iter() {
            h.render(
                &mut out,
                "mgpass_request_duration_seconds",
                &format!("route=\"{route}\",status=\"{status}\""),
            );
        }
        for ((plugin, hook, ok), h) in lock(&self.plugin_calls).iter() {
            let result = if *ok { "ok" } else { "failed" };
            h.render(
                &mut out,
                "mgpass_plugin_call_duration_seconds",
                &format!("plugin=\"{plugin}\",hook=\"{hook}\",result=\"{result}\""),
            );
        }
        for (name, labels, extra, value) in gauges {
            let labels = if extra.is_empty() {
                labels.to_string()
            } else {
                format!("{labels},{extra}")
            };
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
        out
    }
}

/// Serves `GET /metrics` over plain HTTP on a loopback address until the process ends.
pub async fn serve(app: std::sync::Arc<crate::app::App>, listener: tokio::net::TcpListener) {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        let (status, body) = if req.uri().path() == "/metrics" {
                            (200, scrape(&app))
                        } else {
                            (404, "not found\n".to_string())
                        };
                        let mut resp = hyper::Response::new(Full::new(bytes::Bytes::from(body)));
                        *resp.status_mut() =
                            hyper::StatusCode::from_u16(status).unwrap_or_default();
                        resp.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn scrape(app: &crate::app::App) -> String {
    let pending = app.store.outbox_pending().unwrap_or_default();
    let depth = |kind: &str| {
        pending
            .iter()
            .filter(|i| match i.kind {
                crate::store::OutboxKind::BackchannelLogout { .. } => kind == "backchannel_logout",
                crate::store::OutboxKind::Webhook { .. } => kind == "webhook",
            })
            .count() as f64
    };
    let gauges = [
        (
            "mgpass_outbox_depth",
            "kind=\"backchannel_logout\"",
            String::new(),
            depth("backchannel_logout"),
        ),
        (
            "mgpass_outbox_depth",
            "kind=\"webhook\"",
            String::new(),
            depth("webhook"),
        ),
        (
            "mgpass_store_size_bytes",
            "",
            String::new(),
            app.store.size_on_disk() as f64,
        ),
    ];
    app.metrics.render(&gauges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.inc(&m.logins_ok);
        m.token_issued("refresh_token");
        m.request("token", 200, 0.003);
        m.request("token", 200, 0.2);
        let text = m.render(&[("mgpass_store_size_bytes", "", String::new(), 42.0)]);
        assert!(text.contains("mgpass_logins_total{result=\"ok\"} 1"));
        assert!(text.contains("mgpass_tokens_issued_total{grant=\"refresh_token\"} 1"));
        assert!(text.contains(
            "mgpass_request_duration_seconds_bucket{route=\"token\",status=\"200\",le=\"0.005\"} 1"
        ));
        assert!(
            text.contains(
                "mgpass_request_duration_seconds_count{route=\"token\",status=\"200\"} 2"
            )
        );
        assert!(text.contains("mgpass_store_size_bytes{} 42"));
    }
}
