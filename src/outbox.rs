//! The outbox worker: delivers what the store's durable outbox holds — back-channel
//! logout tokens and partner webhooks — at least once, with exponential backoff and jitter, resuming
//! after any restart because the queue lives in the store.

use crate::app::App;
use crate::store::{Finished, OutboxItem, OutboxKind};
use rand::RngExt;
use std::sync::Arc;
use std::time::Duration;

/// How often the worker looks for due items when nothing wakes it.
const POLL: Duration = Duration::from_millis(250);
/// Deliveries in flight at once.
const PARALLEL: usize = 16;

/// An HTTPS client for outgoing notifications: no redirects (a redirect could point
/// anywhere); each request sets its own timeout.
pub fn http_client() -> Result<reqwest::Client, String> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(native_roots())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

fn native_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for path in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        if let Ok(iter) =
            <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_file_iter(
                path,
            )
        {
            for cert in iter.flatten() {
                let _ = roots.add(cert);
            }
            break;
        }
    }
    roots
}

/// Delay before attempt `attempts + 1`: base × 2^attempts, capped at an hour, with up to
/// 25 % jitter so retries from many items do not arrive together.
pub fn backoff_ms(base: Duration, attempts: u32) -> i64 {
    let base = base.as_millis() as i64;
    let delay = base.saturating_mul(1i64 << attempts.min(20)).min(3_600_000);
    let jitter = rand::rng().random_range(0..=delay / 4 + 1);
    delay + jitter
}

/// Runs until the process ends.
pub async fn run(app: Arc<App>) {
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "outbox worker cannot build its HTTP client");
            return;
        }
    };
    loop {
        let due = match app.store.outbox_due(app.clock.now_ms()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "outbox scan failed");
                Vec::new()
            }
        };
        for batch in due.chunks(PARALLEL) {
            let mut tasks = tokio::task::JoinSet::new();
            for item in batch.iter().cloned() {
                let (app, client) = (app.clone(), client.clone());
                tasks.spawn(async move { deliver(&app, &client, item).await });
            }
            while tasks.join_next().await.is_some() {}
        }
        let _ = tokio::time::timeout(POLL, app.outbox_wake.notified()).await;
    }
}

/// Why an attempt failed; `gone` when the receiver said 410 (stop sending).
struct Failure {
    message: String,
    gone: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            gone: false,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::from(message.to_string())
    }
}

async fn post(
    client: &reqwest::Client,
    timeout: std::time::Duration,
    url: &str,
    content_type: &str,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<(), Failure> {
    let mut request = client
        .post(url)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .timeout(timeout);
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    let resp = request
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", without_url(&e)))?;
    match resp.status().as_u16() {
        200..=299 => Ok(()),
        410 => Err(Failure {
            message: "answered 410 Gone".into(),
            gone: true,
        }),
        other => Err(format!("answered {other}").into()),
    }
}

async fn attempt(app: &App, client: &reqwest::Client, item: &OutboxItem) -> Result<(), Failure> {
    match &item.kind {
        OutboxKind::BackchannelLogout {
            client_id,
            sub,
            sid,
        } => {
            let registered = app
                .store
                .client(client_id)
                .map_err(|e| e.to_string())?
                .ok_or("the client was removed")?;
            let token = app
                .mint_logout_token(&registered, sub, sid.as_deref(), &item.id)
                .map_err(|e| e.to_string())?;
            let body = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("logout_token", &token)
                .finish();
            post(
                client,
                app.config.logout.backchannel_timeout,
                &item.target,
                "application/x-www-form-urlencoded",
                &[],
                body.into_bytes(),
            )
            .await
        }
        OutboxKind::Webhook {
            partner_id,
            event_type,
            payload,
        } => {
            let partner = app
                .store
                .partner(partner_id)
                .map_err(|e| e.to_string())?
                .ok_or("the partner was removed")?;
            // Only ever the partner's registered URL, read now: a changed URL applies.
            let url = match (&partner.webhook_url, partner.webhook_disabled_at) {
                (Some(url), None) => url.as_str().to_string(),
                _ => {
                    return Err(Failure {
                        message: "the partner has no active webhook endpoint".into(),
                        gone: true,
                    });
                }
            };
            let body = crate::webhook::envelope(&item.id, event_type, payload, item.created_at);
            let now = app.clock.now();
            let secrets: Vec<&str> = partner
                .live_secrets(now)
                .map(|s| s.secret.as_str())
                .collect();
            let headers = crate::webhook::signature_headers(&secrets, &item.id, now, &body);
            post(
                client,
                app.config.webhooks.timeout,
                &url,
                "application/json",
                &headers,
                body,
            )
            .await
        }
    }
}

/// reqwest errors name the URL; keep the message to the cause.
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(url) = e.url() {
        msg = msg.replace(url.as_str(), "<target>");
    }
    msg
}

/// When to try again after a failure, or `None` to give up.
fn next_attempt(app: &App, item: &OutboxItem, failure: &Failure) -> Option<i64> {
    if failure.gone {
        return None;
    }
    let now = app.clock.now();
    match item.kind {
        OutboxKind::BackchannelLogout { .. } => {
            let age = now - item.created_at;
            (age < app.config.logout.backchannel_max_age.as_secs() as i64).then(|| {
                app.clock.now_ms()
                    + backoff_ms(app.config.logout.backchannel_retry_base, item.attempts)
            })
        }
        OutboxKind::Webhook { .. } => {
            crate::webhook::retry_delay_ms(item.attempts + 1).map(|d| app.clock.now_ms() + d)
        }
    }
}

/// Tracks a partner endpoint's health: a 410, or failures for `disable_after`, disable it.
fn record_endpoint_health(app: &App, item: &OutboxItem, failure: Option<&Failure>) {
    let OutboxKind::Webhook { partner_id, .. } = &item.kind else {
        return;
    };
    let now = app.clock.now();
    let disable_after = app.config.webhooks.disable_after.as_secs() as i64;
    let result = app.store.update_partner(partner_id, |p| match failure {
        None => p.webhook_failing_since = None,
        Some(f) => {
            let since = *p.webhook_failing_since.get_or_insert(now);
            if p.webhook_disabled_at.is_none()
                && p.webhook_url.is_some()
                && (f.gone || now - since >= disable_after)
            {
                p.webhook_disabled_at = Some(now);
                tracing::error!(partner = %p.id, reason = %f.message, "webhook endpoint disabled");
            }
        }
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot record webhook endpoint health");
    }
}

async fn deliver(app: &App, client: &reqwest::Client, item: OutboxItem) {
    let result = attempt(app, client, &item).await;
    let now = app.clock.now();
    record_endpoint_health(app, &item, result.as_ref().err());
    let outcome = match result {
        Ok(()) => {
            app.metrics.inc(&app.metrics.deliveries_ok);
            tracing::info!(id = %item.id, attempts = item.attempts + 1, "notification delivered");
            app.store.outbox_finish(&item.id, Finished::Delivered, now)
        }
        Err(failure) => {
            app.metrics.inc(&app.metrics.delivery_failures);
            match next_attempt(app, &item, &failure) {
                Some(next) => {
                    tracing::warn!(id = %item.id, attempts = item.attempts + 1, error = %failure.message, "notification failed; will retry");
                    app.store
                        .outbox_retry_later(&item.id, next, &failure.message)
                }
                None => {
                    app.metrics.inc(&app.metrics.deliveries_given_up);
                    tracing::error!(id = %item.id, attempts = item.attempts + 1, error = %failure.message, "notification given up");
                    app.store.outbox_finish(&item.id, Finished::GaveUp, now)
                }
            }
        }
    };
    let flushed = match outcome {
        Ok(()) => app.store.flush().await,
        Err(e) => Err(e),
    };
    if let Err(e) = flushed {
        tracing::error!(id = %item.id, error = %e, "cannot record delivery outcome");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let base = Duration::from_secs(5);
        let first = backoff_ms(base, 0);
        assert!((5000..=6251).contains(&first), "{first}");
        let third = backoff_ms(base, 2);
        assert!((20_000..=25_001).contains(&third), "{third}");
        assert!(backoff_ms(base, 30) <= 4_500_001);
    }
}
