//! Partner API: partners and keys (CLI and admin API), rotation, rate limits, event
//! intake through the fixture plugin, idempotency, signed webhooks and their delivery.

use crate::support::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use mgpass::admin::Command;
use mgpass::clock::Clock;
use mgpass::partner::PartnerSpec;
use mgpass::plugin::testdata::FIXTURE;
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;

async fn add_partner(server: &TestServer, webhook_url: Option<String>) -> Value {
    server
        .admin(Command::PartnerAdd(mgpass::partner::PartnerSpec {
            name: Some("Shop".into()),
            event_types: Some(vec!["purchase".into(), "signup".into()]),
            multiplier: Some(1.5),
            webhook_url,
            enabled: None,
        }))
        .await
        .expect("partner add")
}

#[tokio::test]
async fn partner_admin_api_requires_admin_and_never_shows_secrets() {
    let server = TestServer::start().await;
    let url = server.url("/api/rewards/partners");
    let resp = server.http().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let user = user_token(&server, "plainuser", &[], "openid").await;
    let resp = server
        .http()
        .get(&url)
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    let admin = admin_token(&server).await;
    let created: Value = {
        let resp = server
            .http()
            .post(&url)
            .bearer_auth(&admin)
            .json(&json!({"name": "Acme", "event_types": ["purchase"], "webhook_url": "https://acme.example/hook"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        resp.json().await.unwrap()
    };
    let key = created["api_key"].as_str().unwrap();
    assert!(mgpass::partner::keys::well_formed(key));
    assert!(
        created["webhook_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    let id = created["id"].as_str().unwrap();
    let shown: Value = server
        .http()
        .get(format!("{url}/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = shown.to_string();
    assert!(
        !text.contains(key) && !text.contains("whsec_") && !text.contains("digest"),
        "{text}"
    );
    assert_eq!(shown["multiplier"], 1.0);

    // Validation errors name the field and change nothing.
    for (body, field) in [
        (json!({"multiplier": -1}), "multiplier"),
        (
            json!({"webhook_url": "http://acme.example/hook"}),
            "webhook_url",
        ),
        (json!({"event_types": []}), "event_types"),
        (json!({"nmae": "x"}), "nmae"),
    ] {
        let resp = server
            .http()
            .put(format!("{url}/{id}"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(err["message"].as_str().unwrap().contains(field), "{err}");
    }
    let again: Value = server
        .http()
        .get(format!("{url}/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["multiplier"], 1.0);
    assert_eq!(again["event_types"], json!(["purchase"]));

    let resp = server
        .http()
        .post(format!("{url}/{id}/disable"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["enabled"], false);
    let resp = server
        .http()
        .get(format!("{url}/ptn_missing"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn key_rotation_keeps_at_most_two_live_keys() {
    let server = TestServer::start().await;
    let created = add_partner(&server, None).await;
    let id = created["id"].as_str().unwrap().to_string();
    let rotate = |overlap| Command::PartnerRotateKey {
        id: id.clone(),
        overlap_secs: overlap,
    };
    server.admin(rotate(Some(3600))).await.unwrap();
    let v = server.admin(rotate(Some(3600))).await.unwrap();
    assert_eq!(v["keys"].as_array().unwrap().len(), 2, "{v}");
    let v = server.admin(rotate(None)).await.unwrap();
    assert_eq!(v["keys"].as_array().unwrap().len(), 1, "{v}");
}

#[tokio::test]
async fn the_31st_request_in_a_minute_is_limited_with_retry_after() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.partner_per_minute = 30;
        c.rate_limits.api_per_minute = 100;
    })
    .await;
    let url = server.url("/api/partner/events");
    let http = server.http();
    for i in 0..30 {
        let resp = http.post(&url).send().await.unwrap();
        assert_eq!(resp.status(), 401, "request {i} reaches the handler");
        assert!(resp.headers().contains_key("ratelimit"));
    }
    let limited = http.post(&url).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry: i64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, 2, "one slot frees every 2 seconds at 30/min");
    assert_eq!(
        limited.headers()["ratelimit-policy"],
        "\"partner\";q=30;w=60"
    );
    // Other API paths have their own budget.
    let other = http.get(server.url("/api/userinfo")).send().await.unwrap();
    assert_eq!(other.status(), 401);
    server.clock.advance_secs(retry - 1);
    assert_eq!(
        http.post(&url).send().await.unwrap().status(),
        429,
        "not yet"
    );
    server.clock.advance_secs(1);
    assert_eq!(
        http.post(&url).send().await.unwrap().status(),
        401,
        "allowed again after Retry-After"
    );
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    // Untrusted peer: X-Forwarded-For is ignored, so spoofed addresses share one budget.
    let server = TestServer::start_with(|c| c.rate_limits.partner_per_minute = 2).await;
    let url = server.url("/api/partner/events");
    for i in 0..3 {
        let resp = server
            .http()
            .post(&url)
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), if i < 2 { 401 } else { 429 });
    }
    // Trusted proxy: each forwarded client has its own budget.
    let server = TestServer::start_with(|c| {
        c.rate_limits.partner_per_minute = 2;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    for i in 0..3 {
        let resp = server
            .http()
            .post(url_of(&server))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "client {i} has its own budget");
    }
    for _ in 0..2 {
        server
            .http()
            .post(url_of(&server))
            .header("x-forwarded-for", "203.0.113.7, 127.0.0.1")
            .send()
            .await
            .unwrap();
    }
    let resp = server
        .http()
        .post(url_of(&server))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429, "right-most untrusted hop is the client");
}

fn url_of(server: &TestServer) -> String {
    server.url("/api/partner/events")
}

// ---------------------------------------------------------------------------------------
// Events: the fixture plugin credits floor(amount x multiplier) and emits
// `rewards.points_awarded` {"user_id","points"}.

const EVENTS: &str = "/api/partner/events";

async fn fixture_server() -> TestServer {
    fixture_server_with(|_| {}).await
}

/// The fixture gets a 2 s wall-clock budget instead of the default 50 ms: on a loaded
/// 2-core machine (the whole suite in parallel, a compile) a call can wait that long
/// for a CPU and would be answered 503 `temporarily_unavailable`, which is not what
/// these tests are about.
async fn fixture_server_with(adjust: impl FnOnce(&mut mgpass::config::Config)) -> TestServer {
    TestServer::start_with_plugins(&[("fixture", FIXTURE)], |c| {
        c.plugins
            .insert("fixture".into(), toml::toml! { time_budget_ms = 2000 });
        adjust(c);
    })
    .await
}

/// A partner's credentials, as `partner add` shows them once.
struct Creds {
    id: String,
    key: String,
    secret: String,
}

async fn new_partner(server: &TestServer, multiplier: f64, webhook_url: Option<String>) -> Creds {
    let v = server
        .admin(Command::PartnerAdd(PartnerSpec {
            name: Some("Shop".into()),
            event_types: Some(vec!["purchase".into(), "signup".into()]),
            multiplier: Some(multiplier),
            webhook_url,
            enabled: None,
        }))
        .await
        .expect("partner add");
    Creds {
        id: v["id"].as_str().unwrap().into(),
        key: v["api_key"].as_str().unwrap().into(),
        secret: v["webhook_secret"].as_str().unwrap().into(),
    }
}

fn purchase(user: &str, reference: &str, amount: f64) -> Value {
    json!({
        "user_id": user,
        "event_type": "purchase",
        "metadata": {"reference_id": reference, "amount": amount, "currency": "GHS", "item_count": 2},
    })
}

/// What the server answered to one event.
#[derive(Debug)]
struct Answer {
    status: u16,
    replayed: bool,
    text: String,
    body: Value,
}

async fn send_raw(
    http: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let replayed = match resp.headers().get("idempotent-replayed") {
        None => false,
        Some(v) => {
            assert_eq!(v, "true");
            true
        }
    };
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        replayed,
        text,
        body,
    }
}

async fn post_event(server: &TestServer, key: Option<&str>, body: &Value) -> Answer {
    send_raw(&server.http(), &server.url(EVENTS), key, body.to_string()).await
}

/// Asserts the documented success shape, exactly; returns the event id.
fn assert_accepted(a: &Answer, points: i64) -> String {
    assert_eq!(a.status, 200, "{a:?}");
    let obj = a.body.as_object().expect("object");
    assert_eq!(
        obj.len(),
        3,
        "exactly accepted, points_awarded, event_id: {a:?}"
    );
    assert_eq!(a.body["accepted"], true);
    assert_eq!(a.body["points_awarded"], points, "{a:?}");
    let id = a.body["event_id"].as_str().expect("event_id");
    assert!(id.starts_with("evt_") && id.len() > 10, "{id}");
    id.to_string()
}

fn balance(server: &TestServer, user: &str) -> i64 {
    server.app().store.ledger_balance(user).unwrap().points
}

fn entries(server: &TestServer, user: &str) -> Vec<mgpass::store::LedgerEntry> {
    server.app().store.ledger_entries(user, None, 1000).unwrap()
}

/// Webhook items of a partner, pending and finished.
fn webhook_items(server: &TestServer, partner: &str) -> usize {
    let store = &server.app().store;
    let is_ours = |i: &mgpass::store::OutboxItem| matches!(&i.kind, mgpass::store::OutboxKind::Webhook { partner_id, .. } if partner_id == partner);
    store
        .outbox_pending()
        .unwrap()
        .iter()
        .filter(|i| is_ours(i))
        .count()
        + store
            .outbox_finished()
            .unwrap()
            .iter()
            .filter(|(_, _, i)| is_ours(i))
            .count()
}

async fn show_partner(server: &TestServer, id: &str) -> Value {
    server
        .admin(Command::PartnerShow { id: id.into() })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_cli_partner_posts_events_and_the_plugin_credits_the_ledger() {
    let server = fixture_server().await;
    let p = new_partner(&server, 1.5, None).await;
    let user = server.add_user("earner", "earner-pass-1", &[]).await;
    assert_eq!(
        show_partner(&server, &p.id).await["keys"][0]["last_used_at"],
        Value::Null
    );

    let a = post_event(&server, Some(&p.key), &purchase(&user, "order-1", 10.0)).await;
    assert!(!a.replayed);
    let first = assert_accepted(&a, 15);
    assert_eq!(balance(&server, &user), 15);
    // floor(7.9 x 1.5) = floor(11.85) = 11; another allowed type works too.
    let a = post_event(&server, Some(&p.key), &purchase(&user, "order-2", 7.9)).await;
    let second = assert_accepted(&a, 11);
    assert_ne!(first, second);
    let signup =
        json!({"user_id": user, "event_type": "signup", "metadata": {"reference_id": "s-1"}});
    assert_accepted(&post_event(&server, Some(&p.key), &signup).await, 0);
    assert_eq!(balance(&server, &user), 26);
    let e = entries(&server, &user);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[1].points, 15);
    assert_eq!(e[1].partner.as_deref(), Some(p.id.as_str()));
    assert_eq!(e[1].reference.as_deref(), Some("order-1"));
    assert_eq!(e[0].balance_after, 26);
    let records = server.app().store.event_records().unwrap();
    assert_eq!(records.len(), 3);
    assert!(
        records
            .iter()
            .any(|(_, r)| r.event_id == first && r.points_awarded == 15)
    );

    // The key's use is recorded.
    let shown = show_partner(&server, &p.id).await;
    assert_eq!(
        shown["keys"][0]["last_used_at"],
        server.clock.now(),
        "{shown}"
    );

    // An event type outside the allowlist: 403, nothing awarded.
    let refund = json!({"user_id": user, "event_type": "refund", "metadata": {"reference_id": "r-1", "amount": 50}});
    let a = post_event(&server, Some(&p.key), &refund).await;
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.body["error"], "event_type_not_allowed");
    assert!(a.body["message"].as_str().unwrap().contains("refund"));
    // An unknown user: 404, nothing awarded, the reference_id still free.
    let ghost = mgpass::types::UserId::generate().to_string();
    let a = post_event(&server, Some(&p.key), &purchase(&ghost, "order-3", 10.0)).await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(a.body["error"], "user_not_found");
    assert!(a.body.get("message").is_some());
    assert_eq!(balance(&server, &user), 26);
    assert_eq!(balance(&server, &ghost), 0);
    assert_eq!(server.app().store.event_records().unwrap().len(), 3);
    assert_accepted(
        &post_event(&server, Some(&p.key), &purchase(&user, "order-3", 2.0)).await,
        3,
    );
}

#[tokio::test]
async fn every_bad_key_gets_the_same_401() {
    let server = fixture_server().await;
    let p = new_partner(&server, 1.0, None).await;
    let other = new_partner(&server, 1.0, None).await;
    let user = server.add_user("keyuser", "keyuser-pass-1", &[]).await;
    let url = server.url(EVENTS);
    let http = server.http();
    let body = |r: &str| purchase(&user, r, 4.0).to_string();
    assert_accepted(&send_raw(&http, &url, Some(&p.key), body("ok-1")).await, 4);

    // A look-alike: one character of the body changed, so the checksum fails.
    let mut look_alike = p.key.clone().into_bytes();
    let i = 12;
    look_alike[i] = if look_alike[i] == b'A' { b'B' } else { b'A' };
    let look_alike = String::from_utf8(look_alike).unwrap();
    assert!(!mgpass::partner::keys::well_formed(&look_alike));
    let unissued = mgpass::partner::keys::generate();
    let cases: Vec<(&str, Option<String>)> = vec![
        ("absent", None),
        ("empty", Some(String::new())),
        ("malformed", Some("pk_live_your_api_key_here".into())),
        ("look-alike", Some(look_alike)),
        ("well-formed but never issued", Some(unissued)),
        ("test prefix", Some(p.key.replace("pk_live_", "pk_test_"))),
        ("truncated", Some(p.key[..p.key.len() - 1].to_string())),
        ("lower-cased", Some(p.key.to_lowercase())),
        ("with a space", Some(format!(" {}x", p.key))),
    ];
    let mut bodies = Vec::new();
    for (what, key) in &cases {
        let a = send_raw(&http, &url, key.as_deref(), body(what)).await;
        assert_eq!(a.status, 401, "{what}: {a:?}");
        bodies.push((what.to_string(), a.text));
    }
    // Keys are accepted only in X-API-Key: not the query string, not a bearer token.
    for (what, query) in [
        ("query api_key", format!("?api_key={}", p.key)),
        ("query X-API-Key", format!("?X-API-Key={}", p.key)),
    ] {
        let a = send_raw(&http, &format!("{url}{query}"), None, body(what)).await;
        assert_eq!(a.status, 401, "{what}: {a:?}");
        bodies.push((what.to_string(), a.text));
    }
    let resp = http
        .post(&url)
        .bearer_auth(&p.key)
        .header("content-type", "application/json")
        .body(body("bearer"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    bodies.push(("bearer".into(), resp.text().await.unwrap()));
    // Rotated away at once, and a disabled partner's live key.
    let rotated = server
        .admin(Command::PartnerRotateKey {
            id: other.id.clone(),
            overlap_secs: None,
        })
        .await
        .unwrap();
    assert!(rotated["api_key"].as_str().is_some());
    let a = send_raw(&http, &url, Some(&other.key), body("rotated")).await;
    assert_eq!(a.status, 401);
    bodies.push(("rotated".into(), a.text));
    server
        .admin(Command::PartnerUpdate {
            id: p.id.clone(),
            spec: PartnerSpec {
                enabled: Some(false),
                ..Default::default()
            },
        })
        .await
        .unwrap();
    let a = send_raw(&http, &url, Some(&p.key), body("disabled")).await;
    assert_eq!(a.status, 401);
    bodies.push(("disabled".into(), a.text));

    let (_, first) = &bodies[0];
    let v: Value = serde_json::from_str(first).unwrap();
    assert_eq!(v["error"], "invalid_api_key");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    for (what, text) in &bodies {
        assert_eq!(
            text, first,
            "{what}: the answer never tells which check failed"
        );
    }
    assert_eq!(
        balance(&server, &user),
        4,
        "no refused request awarded anything"
    );
    assert_eq!(server.app().store.event_records().unwrap().len(), 1);
}

#[tokio::test]
async fn overlap_keeps_both_keys_until_it_ends_and_now_kills_the_old_key_at_once() {
    let server = fixture_server().await;
    let p = new_partner(&server, 1.0, None).await;
    let user = server.add_user("rotator", "rotator-pass-1", &[]).await;
    let mut n = 0;
    let mut status = async |key: &str| {
        n += 1;
        post_event(
            &server,
            Some(key),
            &purchase(&user, &format!("rot-{n}"), 1.0),
        )
        .await
        .status
    };
    let v = server
        .admin(Command::PartnerRotateKey {
            id: p.id.clone(),
            overlap_secs: Some(3600),
        })
        .await
        .unwrap();
    let second = v["api_key"].as_str().unwrap().to_string();
    assert_ne!(second, p.key);
    assert_eq!(status(&p.key).await, 200, "old key during the overlap");
    assert_eq!(status(&second).await, 200, "new key during the overlap");
    server.clock.advance_secs(3599);
    assert_eq!(
        status(&p.key).await,
        200,
        "old key just before the overlap ends"
    );
    assert_eq!(status(&second).await, 200);
    server.clock.advance_secs(1);
    assert_eq!(status(&p.key).await, 401, "old key once the overlap ended");
    assert_eq!(status(&second).await, 200);
    let shown = show_partner(&server, &p.id).await;
    assert_eq!(shown["keys"].as_array().unwrap().len(), 1, "{shown}");

    // --now: the old key is refused from that instant, the new one works.
    let v = server
        .admin(Command::PartnerRotateKey {
            id: p.id.clone(),
            overlap_secs: None,
        })
        .await
        .unwrap();
    let third = v["api_key"].as_str().unwrap().to_string();
    assert_eq!(
        status(&second).await,
        401,
        "--now retires the old key at once"
    );
    assert_eq!(status(&third).await, 200);
    assert_eq!(
        balance(&server, &user),
        6,
        "every accepted event credited once"
    );
}

#[tokio::test]
async fn malformed_bodies_get_400_naming_the_field() {
    let server = fixture_server().await;
    let p = new_partner(&server, 1.0, None).await;
    let user = server.add_user("shaper", "shaper-pass-1", &[]).await;
    let url = server.url(EVENTS);
    let http = server.http();
    let with = |patch: &dyn Fn(&mut Value)| {
        let mut v = purchase(&user, "r-1", 10.0);
        patch(&mut v);
        v.to_string()
    };
    // Just over 64 KiB, otherwise a valid event.
    let huge = with(&|v| v["metadata"]["note"] = json!("x".repeat(64 * 1024)));
    let cases: Vec<(&str, String, &str)> = vec![
        ("bad JSON", "{\"user_id\": ".into(), "body"),
        ("not an object", "[1,2]".into(), "body"),
        ("empty body", String::new(), "body"),
        ("over 64 KiB", huge, "body"),
        (
            "missing user_id",
            with(&|v| {
                v.as_object_mut().unwrap().remove("user_id");
            }),
            "user_id",
        ),
        (
            "user_id a number",
            with(&|v| v["user_id"] = json!(42)),
            "user_id",
        ),
        (
            "user_id empty",
            with(&|v| v["user_id"] = json!("")),
            "user_id",
        ),
        (
            "missing event_type",
            with(&|v| {
                v.as_object_mut().unwrap().remove("event_type");
            }),
            "event_type",
        ),
        (
            "event_type an array",
            with(&|v| v["event_type"] = json!(["purchase"])),
            "event_type",
        ),
        (
            "missing metadata",
            with(&|v| {
                v.as_object_mut().unwrap().remove("metadata");
            }),
            "metadata",
        ),
        (
            "metadata a string",
            with(&|v| v["metadata"] = json!("r-1")),
            "metadata",
        ),
        (
            "metadata an array",
            with(&|v| v["metadata"] = json!([])),
            "metadata",
        ),
        (
            "missing reference_id",
            with(&|v| {
                v["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("reference_id");
            }),
            "metadata.reference_id",
        ),
        (
            "reference_id a number",
            with(&|v| v["metadata"]["reference_id"] = json!(7)),
            "metadata.reference_id",
        ),
        (
            "reference_id too long",
            with(&|v| v["metadata"]["reference_id"] = json!("r".repeat(129))),
            "metadata.reference_id",
        ),
        (
            "amount a string",
            with(&|v| v["metadata"]["amount"] = json!("10")),
            "metadata.amount",
        ),
        (
            "amount negative",
            with(&|v| v["metadata"]["amount"] = json!(-1)),
            "metadata.amount",
        ),
        (
            "currency a number",
            with(&|v| v["metadata"]["currency"] = json!(936)),
            "metadata.currency",
        ),
        (
            "item_count fractional",
            with(&|v| v["metadata"]["item_count"] = json!(1.5)),
            "metadata.item_count",
        ),
        (
            "item_count negative",
            with(&|v| v["metadata"]["item_count"] = json!(-2)),
            "metadata.item_count",
        ),
    ];
    for (what, body, field) in cases {
        let a = send_raw(&http, &url, Some(&p.key), body).await;
        assert_eq!(a.status, 400, "{what}: {a:?}");
        assert_eq!(a.body["error"], "invalid_request", "{what}: {a:?}");
        let message = a.body["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(field),
            "{what}: message {message:?} names {field}"
        );
    }
    assert_eq!(
        balance(&server, &user),
        0,
        "no malformed event awarded anything"
    );
    assert!(server.app().store.event_records().unwrap().is_empty());
    // None of them used up the reference_id.
    assert_accepted(
        &send_raw(&http, &url, Some(&p.key), with(&|_| {})).await,
        10,
    );
}

#[tokio::test]
async fn duplicates_replay_the_original_and_conflicts_get_409() {
    let server = fixture_server().await;
    let p = new_partner(&server, 2.0, None).await;
    let other = new_partner(&server, 1.0, None).await;
    let user = server.add_user("dup", "dup-pass-1", &[]).await;
    let event = purchase(&user, "dup-1", 12.0);
    let first = post_event(&server, Some(&p.key), &event).await;
    assert!(!first.replayed);
    let id = assert_accepted(&first, 24);
    let items = webhook_items(&server, &p.id);
    assert_eq!(items, 1);

    // The same event again, however it is serialized: the original answer, replayed.
    let pretty = serde_json::to_string_pretty(&event).unwrap();
    let reordered = format!(
        r#"{{"metadata":{{"item_count":2,"currency":"GHS","amount":12.0,"reference_id":"dup-1"}},"event_type":"purchase","user_id":"{user}"}}"#
    );
    for (i, body) in [event.to_string(), pretty, reordered]
        .into_iter()
        .enumerate()
    {
        let again = send_raw(&server.http(), &server.url(EVENTS), Some(&p.key), body).await;
        assert!(again.replayed, "{i}: {again:?}");
        assert_eq!(assert_accepted(&again, 24), id);
        assert_eq!(again.text, first.text, "the original response");
    }
    assert_eq!(balance(&server, &user), 24, "replays award nothing");
    assert_eq!(entries(&server, &user).len(), 1);
    assert_eq!(webhook_items(&server, &p.id), 1, "replays emit nothing");

    // Same reference_id, different event: 409, nothing awarded.
    for changed in [
        purchase(&user, "dup-1", 13.0),
        json!({"user_id": user, "event_type": "signup", "metadata": {"reference_id": "dup-1"}}),
    ] {
        let a = post_event(&server, Some(&p.key), &changed).await;
        assert_eq!(a.status, 409, "{a:?}");
        assert!(!a.replayed);
        assert_eq!(a.body["error"], "idempotency_conflict");
    }
    assert_eq!(balance(&server, &user), 24);
    // reference_ids are per partner: another partner may use the same one.
    assert_accepted(&post_event(&server, Some(&other.key), &event).await, 12);
    assert_eq!(balance(&server, &user), 36);
    // Still replayed much later ("forever").
    server.clock.advance_secs(400 * 24 * 3600);
    let late = post_event(&server, Some(&p.key), &event).await;
    assert!(late.replayed);
    assert_eq!(assert_accepted(&late, 24), id);
}

#[tokio::test]
async fn fifty_concurrent_identical_events_award_once() {
    let server = fixture_server().await;
    let p = new_partner(&server, 1.0, None).await;
    let user = server.add_user("racer", "racer-pass-1", &[]).await;
    let body = purchase(&user, "race-1", 25.0).to_string();
    let url = server.url(EVENTS);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        // Separate clients: separate connections, really concurrent.
        let http = server.http();
        let (url, key, body) = (url.clone(), p.key.clone(), body.clone());
        tasks.spawn(async move { send_raw(&http, &url, Some(&key), body).await });
    }
    let answers = tasks.join_all().await;
    let mut ids = std::collections::BTreeSet::new();
    for a in &answers {
        ids.insert(assert_accepted(a, 25));
    }
    assert_eq!(ids.len(), 1, "every answer names the same event");
    let fresh = answers.iter().filter(|a| !a.replayed).count();
    assert_eq!(fresh, 1, "exactly one original, 49 replays");
    assert_eq!(balance(&server, &user), 25, "awarded once");
    assert_eq!(entries(&server, &user).len(), 1);
    assert_eq!(server.app().store.event_records().unwrap().len(), 1);
    assert_eq!(webhook_items(&server, &p.id), 1, "one webhook");
}

#[tokio::test]
async fn a_plugin_failure_is_502_and_records_nothing_so_a_retry_works() {
    let server = fixture_server().await;
    let p = new_partner(&server, 1.0, None).await;
    let user = server.add_user("fails", "fails-pass-1", &[]).await;
    let admin = admin_token(&server).await;
    // Fill the user's balance to the ledger's cap (2^53), via the fixture's admin route,
    // so the next credit fails inside the plugin.
    let cap: i64 = 1 << 53;
    let resp = server
        .http()
        .post(server.url(&format!("/api/fixture/credit/{user}")))
        .bearer_auth(&admin)
        .body((cap - 5).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let before = entries(&server, &user);
    let event = purchase(&user, "fail-1", 10.0);
    let a = post_event(&server, Some(&p.key), &event).await;
    assert_eq!(a.status, 502, "{a:?}");
    assert_eq!(a.body["error"], "plugin_error");
    assert!(
        !a.text.contains("InvalidAmount"),
        "no plugin detail leaks: {}",
        a.text
    );
    assert_eq!(entries(&server, &user), before, "no ledger write");
    assert!(
        server.app().store.event_records().unwrap().is_empty(),
        "no event record"
    );
    assert_eq!(webhook_items(&server, &p.id), 0, "no webhook");

    // Once the cause is gone, the very same event goes through: it was not recorded.
    let resp = server
        .http()
        .post(server.url(&format!("/api/fixture/debit/{user}")))
        .bearer_auth(&admin)
        .body("100")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let retry = post_event(&server, Some(&p.key), &event).await;
    assert!(!retry.replayed, "{retry:?}");
    assert_accepted(&retry, 10);
    assert_eq!(balance(&server, &user), cap - 5 - 100 + 10);
    assert_eq!(webhook_items(&server, &p.id), 1);
}

// ---------------------------------------------------------------------------------------
// Webhooks

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a delivery as a partner's receiver would: `X-Webhook-Signature` with the
/// newest secret, one Standard Webhooks signature per live secret (each verified
/// independently), the envelope fields; returns the envelope.
fn verify_delivery(hook: &Received, secrets: &[&str], now: i64) -> Value {
    let body = hook.body.as_bytes();
    let newest = secrets.last().unwrap();
    assert_eq!(
        hook.header("x-webhook-signature"),
        Some(hex(&hmac(newest.as_bytes(), body)).as_str()),
        "hex HMAC-SHA256(secret, body)"
    );
    assert_eq!(hook.header("content-type"), Some("application/json"));
    let id = hook.header("webhook-id").expect("webhook-id");
    let ts = hook.header("webhook-timestamp").expect("webhook-timestamp");
    let ts_n: i64 = ts.parse().unwrap();
    assert!(
        (now - 60..=now + 5).contains(&ts_n),
        "timestamp {ts} near {now}"
    );
    let sigs: Vec<&str> = hook
        .header("webhook-signature")
        .expect("webhook-signature")
        .split(' ')
        .collect();
    assert_eq!(
        sigs.len(),
        secrets.len(),
        "one signature per live secret: {sigs:?}"
    );
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(body);
    for secret in secrets {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("whsec_ secret"))
            .unwrap();
        let expected = format!("v1,{}", STANDARD.encode(hmac(&key, &signed)));
        assert!(
            sigs.contains(&expected.as_str()),
            "a signature verifies with {secret}"
        );
    }
    let envelope = hook.json();
    let obj = envelope.as_object().unwrap();
    assert_eq!(obj.len(), 4, "{envelope}");
    assert_eq!(envelope["id"], id);
    assert!(envelope["event_type"].is_string());
    assert!(envelope["data"].is_object());
    let t = envelope["timestamp"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(t).is_ok(), "{t}");
    envelope
}

#[tokio::test]
async fn webhooks_verify_with_both_schemes_and_carry_both_secrets_during_a_rotation() {
    let server = fixture_server().await;
    let hooks = Receiver::start().await;
    let p = new_partner(&server, 3.0, Some(hooks.url("/hooks"))).await;
    let user = server.add_user("hooked", "hooked-pass-1", &[]).await;
    assert_accepted(
        &post_event(&server, Some(&p.key), &purchase(&user, "h-1", 5.0)).await,
        15,
    );
    let got = hooks.wait_accepted(1, || server.nudge_outbox()).await;
    let envelope = verify_delivery(&got[0], &[&p.secret], server.clock.now());
    assert_eq!(envelope["event_type"], "rewards.points_awarded");
    assert_eq!(envelope["data"], json!({"user_id": user, "points": 15}));
    assert_eq!(got[0].path, "/hooks");
    // A tampered body or another secret does not verify.
    let mut tampered = got[0].clone();
    tampered.body = tampered.body.replace("15", "16");
    assert!(std::panic::catch_unwind(|| verify_delivery(&tampered, &[&p.secret], 0)).is_err());

    // Rotate the secret with an overlap: both secrets sign each delivery.
    let v = server
        .admin(Command::PartnerRotateWebhookSecret {
            id: p.id.clone(),
            overlap_secs: Some(3600),
        })
        .await
        .unwrap();
    let new_secret = v["webhook_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, p.secret);
    assert_accepted(
        &post_event(&server, Some(&p.key), &purchase(&user, "h-2", 1.0)).await,
        3,
    );
    let got = hooks.wait_accepted(2, || server.nudge_outbox()).await;
    verify_delivery(&got[1], &[&p.secret, &new_secret], server.clock.now());
    assert_eq!(
        got[1]
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    // After the overlap: only the new secret.
    server.clock.advance_secs(3601);
    assert_accepted(
        &post_event(&server, Some(&p.key), &purchase(&user, "h-3", 1.0)).await,
        3,
    );
    let got = hooks.wait_accepted(3, || server.nudge_outbox()).await;
    verify_delivery(&got[2], &[&new_secret], server.clock.now());
    let ids: std::collections::BTreeSet<_> = got
        .iter()
        .map(|h| h.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "one id per event");
}

/// Waits a little with the clock still, waking the worker: nothing may arrive.
async fn expect_no_new_delivery(server: &TestServer, hooks: &Receiver, count: usize) {
    for _ in 0..8 {
        server.app().outbox_wake.notify_one();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(hooks.received().len(), count, "no attempt before its time");
}

#[tokio::test]
async fn a_receiver_failing_three_times_gets_the_event_on_the_fourth_try_and_can_redeliver() {
    let server = fixture_server().await;
    let hooks = Receiver::start().await;
    let p = new_partner(&server, 1.0, Some(hooks.url("/hooks"))).await;
    let user = server.add_user("retried", "retried-pass-1", &[]).await;
    hooks.fail_next(3);
    assert_accepted(
        &post_event(&server, Some(&p.key), &purchase(&user, "t-1", 8.0)).await,
        8,
    );
    let wake = || server.app().outbox_wake.notify_one();
    hooks.wait_received(1, wake).await;
    // Backoff: about 5 s, 5 min, 30 min, each with up to 10 % jitter.
    for (n, step) in [(1, 5), (2, 300), (3, 1800)] {
        server.clock.advance_secs(step * 9 / 10);
        expect_no_new_delivery(&server, &hooks, n).await;
        server.clock.advance_secs(step * 2 / 10 + 1);
        hooks.wait_received(n + 1, wake).await;
    }
    let got = hooks.received();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        got.iter().map(|h| h.status).collect::<Vec<_>>(),
        [500, 500, 500, 200]
    );
    let first_id = got[0].header("webhook-id").unwrap();
    for h in &got {
        assert_eq!(
            h.header("webhook-id"),
            Some(first_id),
            "the same message each time"
        );
        assert_eq!(h.body, got[0].body);
    }
    verify_delivery(&got[3], &[&p.secret], server.clock.now());
    server.clock.advance_secs(100_000);
    expect_no_new_delivery(&server, &hooks, 4).await;
    assert_eq!(
        balance(&server, &user),
        8,
        "delivery retries never re-apply the event"
    );
    let show = show_partner(&server, &p.id).await;
    assert_eq!(show["webhook_disabled_at"], Value::Null);

    // The admin log lists the delivery with its attempts, and redelivers it on request.
    let admin = admin_token(&server).await;
    let list = server.url("/api/rewards/webhooks/deliveries");
    assert_eq!(server.http().get(&list).send().await.unwrap().status(), 401);
    let v: Value = server
        .http()
        .get(&list)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deliveries = v["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{v}");
    let d = &deliveries[0];
    assert_eq!(d["id"], first_id);
    assert_eq!(d["partner_id"], p.id.as_str());
    assert_eq!(d["event_type"], "rewards.points_awarded");
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["attempts"], 4);
    let resp = server
        .http()
        .post(format!("{list}/{first_id}/redeliver"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let got = hooks.wait_received(5, wake).await;
    assert_eq!(got[4].status, 200);
    assert_eq!(got[4].header("webhook-id"), Some(first_id));
    assert_eq!(got[4].body, got[0].body);
    verify_delivery(&got[4], &[&p.secret], server.clock.now());
    let resp = server
        .http()
        .post(format!("{list}/out_missing/redeliver"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(balance(&server, &user), 8);
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_stops_deliveries() {
    let server = fixture_server().await;
    let hooks = Receiver::start().await;
    let p = new_partner(&server, 1.0, Some(hooks.url("/hooks"))).await;
    let user = server.add_user("gone", "gone-pass-1", &[]).await;
    hooks.set_status(410);
    assert_accepted(
        &post_event(&server, Some(&p.key), &purchase(&user, "g-1", 3.0)).await,
        3,
    );
    let wake = || server.app().outbox_wake.notify_one();
    hooks.wait_received(1, wake).await;
    let disabled = poll_until(Duration::from_secs(10), wake, || {
        let p = server.app().store.partner(&p.id).unwrap().unwrap();
        p.webhook_disabled_at
    })
    .await
    .expect("webhook_disabled_at set");
    assert_eq!(disabled, server.clock.now());
    assert_eq!(
        show_partner(&server, &p.id).await["webhook_disabled_at"],
        disabled
    );
    // Later events are still accepted, but nothing more is sent, however long we wait.
    hooks.set_status(0);
    assert_accepted(
        &post_event(&server, Some(&p.key), &purchase(&user, "g-2", 3.0)).await,
        3,
    );
    for _ in 0..5 {
        server.clock.advance_secs(24 * 3600);
        expect_no_new_delivery(&server, &hooks, 1).await;
    }
    let pending = poll_until(Duration::from_secs(5), wake, || {
        let n = server.app().store.outbox_pending().unwrap().len();
        (n == 0).then_some(())
    })
    .await;
    assert!(pending.is_some(), "nothing left scheduled");
    assert_eq!(balance(&server, &user), 6);
}

// ---------------------------------------------------------------------------------------
// The real binary: CLI, SIGKILL with deliveries pending, restart.

fn mgpass_cli(config: &std::path::Path, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mgpass"))
        .env_remove("MGPASS_CONFIG")
        .env("RUST_LOG", "warn")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn spawn_mgpass(config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_mgpass"))
        .env_remove("MGPASS_CONFIG")
        .env("RUST_LOG", "warn")
        .arg("--config")
        .arg(config)
        .arg("serve")
        .spawn()
        .unwrap()
}

/// A real `mgpass serve` with the fixture installed as an operator plugin.
fn spawn_with_fixture() -> crate::foundation::ServerProcess {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::write(dir.path().join("plugins/fixture.wasm"), FIXTURE).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "issuer = \"https://localhost:{port}\"\nlisten = \"127.0.0.1:{port}\"\n\
             [login]\nargon2_memory_kib = 64\nargon2_iterations = 1\n\
             [plugins.rewards]\nenabled = false\n"
        ),
    )
    .unwrap();
    let mut p = crate::foundation::ServerProcess {
        child: spawn_mgpass(&config),
        config,
        dir,
        port,
    };
    p.wait_ready();
    p
}

/// What the store holds, read with the server stopped.
fn offline_state(dir: &std::path::Path, user: &str) -> (i64, u64, usize, usize) {
    let store = mgpass::store::Store::open(&dir.join("data/db")).expect("store opens");
    let b = store.ledger_balance(user).unwrap();
    let events = store.event_records().unwrap().len();
    let pending = store.outbox_pending().unwrap().len();
    (b.points, b.seq, events, pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_binary_cli_partner_events_survive_sigkill_with_deliveries_pending() {
    let hooks = Receiver::start().await;
    hooks.set_down(true);
    let mut server = tokio::task::block_in_place(spawn_with_fixture);
    let config = server.config.clone();
    let created = mgpass_cli(
        &config,
        &[
            "partner",
            "add",
            "--name",
            "Kiosk",
            "--event-type",
            "purchase",
            "--multiplier",
            "2",
            "--webhook-url",
            &hooks.url("/hooks"),
            "--json",
        ],
    );
    let (id, key, secret) = (
        created["id"].as_str().unwrap().to_string(),
        created["api_key"].as_str().unwrap().to_string(),
        created["webhook_secret"].as_str().unwrap().to_string(),
    );
    assert!(mgpass::partner::keys::well_formed(&key));
    let user = mgpass_cli(
        &config,
        &[
            "user",
            "add",
            "--username",
            "kim",
            "--password",
            "kim-pass-123",
            "--json",
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], server.port).into();
    let cert = server.dir.path().join("data/tls-cert.pem");
    let http = client_builder(&cert, addr).build().unwrap();
    let url = format!("https://localhost:{}{EVENTS}", server.port);
    let events: Vec<Value> = (1..=3)
        .map(|i| purchase(&user, &format!("k-{i}"), 10.0 * i as f64))
        .collect();
    let mut answers = Vec::new();
    for e in &events {
        let a = send_raw(&http, &url, Some(&key), e.to_string()).await;
        answers.push(assert_accepted(
            &a,
            e["metadata"]["amount"].as_f64().unwrap() as i64 * 2,
        ));
    }
    // Rotation through the real CLI: both keys work during the overlap.
    let rotated = mgpass_cli(
        &config,
        &["partner", "rotate-key", &id, "--overlap", "1h", "--json"],
    );
    let new_key = rotated["api_key"].as_str().unwrap().to_string();
    for (k, r) in [(&key, "k-old"), (&new_key, "k-new")] {
        let a = send_raw(&http, &url, Some(k), purchase(&user, r, 1.0).to_string()).await;
        assert_accepted(&a, 2);
    }

    // kill -9 while every delivery is still pending (the receiver drops connections).
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let (points, seq, recorded, pending) = offline_state(server.dir.path(), &user);
    assert_eq!(
        (points, seq, recorded),
        (124, 5, 5),
        "every acknowledged event is durable"
    );
    assert_eq!(pending, 5, "every webhook still queued");

    hooks.set_down(false);
    server.child = spawn_mgpass(&config);
    tokio::task::block_in_place(|| server.wait_ready());
    // Re-sending after the crash replays; nothing is applied twice.
    for (e, id) in events.iter().zip(&answers) {
        let a = send_raw(&http, &url, Some(&new_key), e.to_string()).await;
        assert!(a.replayed, "{a:?}");
        assert_eq!(a.body["event_id"], id.as_str());
    }
    // The queued webhooks arrive after the restart (first retry is about 5 s out).
    let got = poll_until(
        Duration::from_secs(30),
        || {},
        || {
            let a = hooks.accepted();
            (a.len() >= 5).then_some(a)
        },
    )
    .await
    .unwrap_or_else(|| panic!("deliveries after restart: {:?}", hooks.received()));
    let ids: std::collections::BTreeSet<_> = got
        .iter()
        .map(|h| h.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5, "each webhook delivered: {ids:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut awarded: Vec<i64> = got
        .iter()
        .map(|h| {
            verify_delivery(h, &[&secret], now)["data"]["points"]
                .as_i64()
                .unwrap()
        })
        .collect();
    awarded.sort();
    assert_eq!(awarded, [2, 2, 20, 40, 60]);
    assert_eq!(server.terminate(), Some(0));
    let (points, seq, recorded, pending) = offline_state(server.dir.path(), &user);
    assert_eq!(
        (points, seq, recorded, pending),
        (124, 5, 5, 0),
        "nothing applied twice"
    );
}

#[tokio::test]
async fn in_process_restart_with_deliveries_pending_loses_nothing() {
    let mut server = fixture_server().await;
    let hooks = Receiver::start().await;
    let p = new_partner(&server, 1.0, Some(hooks.url("/hooks"))).await;
    let user = server.add_user("restarted", "restarted-pass-1", &[]).await;
    hooks.set_down(true);
    for i in 0..4 {
        let a = post_event(
            &server,
            Some(&p.key),
            &purchase(&user, &format!("x-{i}"), 5.0),
        )
        .await;
        assert_accepted(&a, 5);
    }
    hooks
        .wait_received(4, || server.app().outbox_wake.notify_one())
        .await;
    assert_eq!(server.app().store.outbox_pending().unwrap().len(), 4);
    server.restart().await;
    assert_eq!(balance(&server, &user), 20, "unchanged by the restart");
    hooks.set_down(false);
    let got = hooks.wait_accepted(4, || server.nudge_outbox()).await;
    let ids: std::collections::BTreeSet<_> = got
        .iter()
        .map(|h| h.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(balance(&server, &user), 20);
    assert_eq!(entries(&server, &user).len(), 4);
    let a = post_event(&server, Some(&p.key), &purchase(&user, "x-0", 5.0)).await;
    assert!(a.replayed);
}

// ---------------------------------------------------------------------------------------
// Benchmark (not asserted): events per second through the whole path.
// `cargo test --release --test e2e partner::events_per_second -- --ignored --nocapture`

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn events_per_second_at_16_clients() {
    let server = fixture_server_with(|c| {
        c.rate_limits.partner_per_minute = 100_000_000;
        c.rate_limits.api_per_minute = 100_000_000;
    })
    .await;
    let p = new_partner(&server, 1.0, None).await;
    let mut users = Vec::new();
    for i in 0..16 {
        users.push(
            server
                .add_user(&format!("bench{i}"), "bench-pass-1", &[])
                .await,
        );
    }
    for (clients, secs) in [(1usize, 3u64), (16, 5)] {
        let url = server.url(EVENTS);
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        let start = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (c, user) in users.iter().enumerate().take(clients) {
            let http = server.http();
            let (url, key, user) = (url.clone(), p.key.clone(), user.clone());
            tasks.spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut latencies = Vec::new();
                while std::time::Instant::now() < deadline {
                    let n = ok + failed;
                    let body = purchase(&user, &format!("b{clients}-{c}-{n}"), 3.0).to_string();
                    let sent = std::time::Instant::now();
                    let a = send_raw(&http, &url, Some(&key), body).await;
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    if a.status == 200 {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed, latencies)
            });
        }
        let (mut total, mut failed, mut latencies) = (0, 0, Vec::new());
        for (ok, bad, l) in tasks.join_all().await {
            total += ok;
            failed += bad;
            latencies.extend(l);
        }
        let elapsed = start.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
        println!(
            "{clients:>2} clients: {total} events in {elapsed:.1} s = {:.0} events/s \
             (non-200: {failed}; latency p50 {:.1} ms, p99 {:.1} ms)",
            total as f64 / elapsed,
            pct(0.5),
            pct(0.99)
        );
    }
    // Durable writes alone (a small write + Store::flush), one thread and then 16
    // threads at once: if flushes were not shared, 16 threads could not beat one.
    let store = server.app().store.clone();
    let mut ids = Vec::new();
    for _ in 0..16 {
        ids.push(new_partner(&server, 1.0, None).await.id);
    }
    for threads in [1usize, 16] {
        let per_thread = 200 / threads.min(4);
        let start = std::time::Instant::now();
        std::thread::scope(|s| {
            for id in ids.iter().take(threads) {
                let store = &store;
                s.spawn(move || {
                    for _ in 0..per_thread {
                        store.update_partner(id, |p| p.updated_at += 1).unwrap();
                        store.flush_blocking().unwrap();
                    }
                });
            }
        });
        let ops = (threads * per_thread) as f64;
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "write+flush, {threads:>2} threads: {:.0}/s ({:.2} ms each seen by a thread)",
            ops / elapsed,
            elapsed * 1000.0 * threads as f64 / ops
        );
    }
}
