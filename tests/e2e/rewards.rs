//! Rewards (issue 7) end to end: the embedded rewards plugin behind the real server over
//! TLS — rules, earning, tiers, caps, balance and history, cashback redemptions and
//! the payout callback, reversals, the tier claim, and replacing the plugin at runtime.
//! Every scenario ends with the ledger invariant (`assert_ledger_consistent`).

use crate::support::*;
use mgpass::admin::Command;
use mgpass::clock::Clock;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * HOUR;
const SECRET: &str = "provider-secret-0123456789";

// ----- setup -----------------------------------------------------------------------------

/// A server whose `[plugins.rewards]` is `plugin`, with access tokens that outlive the
/// days and months the clock is moved through.
async fn rewards_server(plugin: toml::Table) -> TestServer {
    TestServer::start_with(move |c| {
        c.plugins.insert("rewards".into(), plugin);
        c.tokens.access_token_ttl = Duration::from_secs(400 * 86_400);
    })
    .await
}

fn table(text: &str) -> toml::Table {
    toml::from_str(text).expect("plugin table")
}

struct User {
    id: String,
    name: String,
    token: String,
}

async fn new_user(server: &TestServer, name: &str) -> User {
    let token = user_token(server, name, &[], "openid").await;
    let id = jwt_payload(&token)["sub"]
        .as_str()
        .expect("sub")
        .to_string();
    User {
        id,
        name: name.into(),
        token,
    }
}

struct Partner {
    id: String,
    key: String,
}

async fn new_partner(
    server: &TestServer,
    event_types: &[&str],
    multiplier: f64,
    webhook_url: Option<String>,
) -> Partner {
    let v = server
        .admin(Command::PartnerAdd(mgpass::partner::PartnerSpec {
            name: Some("Shop".into()),
            event_types: Some(event_types.iter().map(|s| s.to_string()).collect()),
            multiplier: Some(multiplier),
            webhook_url,
            enabled: None,
        }))
        .await
        .expect("partner add");
    Partner {
        id: v["id"].as_str().expect("id").into(),
        key: v["api_key"].as_str().expect("api_key").into(),
    }
}

/// One request; returns the status, the JSON body (Null when not JSON) and the headers.
async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = server.http().request(method, server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value, headers)
}

async fn get(server: &TestServer, path: &str, token: &str) -> (u16, Value) {
    let (s, v, _) = call(server, Method::GET, path, Some(token), None, &[]).await;
    (s, v)
}

async fn create_rule(server: &TestServer, admin: &str, body: Value) -> Value {
    let (s, v, _) = call(
        server,
        Method::POST,
        "/api/rewards/rules",
        Some(admin),
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(s, 201, "{body} → {v}");
    v
}

async fn delete_rule(server: &TestServer, admin: &str, id: &str) {
    let path = format!("/api/rewards/rules/{id}");
    let (s, v, _) = call(server, Method::DELETE, &path, Some(admin), None, &[]).await;
    assert_eq!(s, 200, "{v}");
}

/// Posts a partner event; returns the status and body.
async fn post_event(
    server: &TestServer,
    partner: &Partner,
    user: &str,
    event_type: &str,
    metadata: Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let body = json!({"user_id": user, "event_type": event_type, "metadata": metadata});
    let resp = server
        .http()
        .post(server.url("/api/partner/events"))
        .header("x-api-key", &partner.key)
        .json(&body)
        .send()
        .await
        .expect("event");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    (status, value, headers)
}

/// An event with a fresh reference and `metadata` fields; returns `points_awarded`.
async fn award(
    server: &TestServer,
    partner: &Partner,
    user: &str,
    event_type: &str,
    metadata: Value,
) -> i64 {
    let mut metadata = metadata;
    metadata["reference_id"] = json!(mgpass::crypto::random_id("ref_"));
    let (s, v, _) = post_event(server, partner, user, event_type, metadata).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"], true, "{v}");
    v["points_awarded"].as_i64().expect("points_awarded")
}

/// A partner event with the given metadata (reference included); returns
/// `points_awarded` and the response headers.
async fn event(
    server: &TestServer,
    partner: &Partner,
    user: &str,
    event_type: &str,
    metadata: Value,
) -> (i64, reqwest::header::HeaderMap) {
    let (s, v, h) = post_event(server, partner, user, event_type, metadata).await;
    assert_eq!(s, 200, "{v}");
    (v["points_awarded"].as_i64().expect("points_awarded"), h)
}

async fn summary(server: &TestServer, token: &str) -> Value {
    let (s, v) = get(server, "/api/account/rewards", token).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn adjust(server: &TestServer, admin: &str, user: &str, points: i64) -> (u16, Value) {
    let path = format!("/api/rewards/users/{user}/adjust");
    let body = json!({"points": points, "reason": "test adjustment"});
    let (s, v, _) = call(server, Method::POST, &path, Some(admin), Some(&body), &[]).await;
    (s, v)
}

async fn credit(server: &TestServer, admin: &str, user: &str, points: i64) {
    let (s, v) = adjust(server, admin, user, points).await;
    assert_eq!(s, 200, "{v}");
}

fn redemption(points: i64) -> Value {
    json!({"points": points, "phone_number": "0241234567", "network": "mtn"})
}

async fn redeem(
    server: &TestServer,
    token: &str,
    body: &Value,
    idempotency_key: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let headers: Vec<(&str, &str)> = idempotency_key
        .map(|k| vec![("idempotency-key", k)])
        .unwrap_or_default();
    call(
        server,
        Method::POST,
        "/api/account/cashback/redeem",
        Some(token),
        Some(body),
        &headers,
    )
    .await
}

fn sign(secret: &str, body: &[u8]) -> String {
    mgpass::crypto::hex(&mgpass::webhook::hmac_sha256(secret.as_bytes(), &[body]))
}

/// The payout provider's callback with the raw `body` and an optional `X-Signature`.
async fn callback_raw(server: &TestServer, body: &str, signature: Option<&str>) -> (u16, Value) {
    let mut req = server
        .http()
        .post(server.url("/api/cashback/callback"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(sig) = signature {
        req = req.header("x-signature", sig);
    }
    let resp = req.send().await.expect("callback");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A correctly signed callback.
async fn callback(
    server: &TestServer,
    id: &str,
    status: &str,
    reason: Option<&str>,
) -> (u16, Value) {
    let body = json!({"cashback_ID": id, "status": status, "reason": reason}).to_string();
    callback_raw(server, &body, Some(&sign(SECRET, body.as_bytes()))).await
}

async fn history(server: &TestServer, token: &str, query: &str) -> (u16, Value) {
    get(
        server,
        &format!("/api/account/rewards/history{query}"),
        token,
    )
    .await
}

/// The sorted keys of a JSON object.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "errors carry a message: {body}"
    );
}

// ----- the clock -------------------------------------------------------------------------

fn now_ms(server: &TestServer) -> i64 {
    server.clock.now_ms()
}

fn advance_to(server: &TestServer, at: i64) {
    let now = now_ms(server);
    assert!(at >= now, "the clock only moves forward");
    server.clock.advance_ms(at - now);
}

/// The next UTC midnight after `ms`.
fn next_day(ms: i64) -> i64 {
    (ms.div_euclid(DAY) + 1) * DAY
}

/// The next Monday 00:00 UTC after `ms` (1970-01-01 was a Thursday).
fn next_monday(ms: i64) -> i64 {
    let mut day = ms.div_euclid(DAY) + 1;
    while (day + 3).rem_euclid(7) != 0 {
        day += 1;
    }
    day * DAY
}

/// The day of the month of a day number (days since 1970-01-01), by H. Hinnant's
/// civil-from-days.
fn day_of_month(days: i64) -> i64 {
    let z = days + 719_468;
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    doy - (153 * mp + 2) / 5 + 1
}

/// The first of the next month, 00:00 UTC, after `ms`.
fn next_month(ms: i64) -> i64 {
    let mut day = ms.div_euclid(DAY) + 1;
    while day_of_month(day) != 1 {
        day += 1;
    }
    day * DAY
}

#[test]
fn calendar_helpers() {
    // 2024-05-01 was a Wednesday.
    let may1 = 19_844 * DAY;
    assert_eq!(day_of_month(19_844), 1);
    assert_eq!(day_of_month(19_844 + 30), 31);
    assert_eq!(next_month(may1 + HOUR), 19_844 * DAY + 31 * DAY);
    assert_eq!(next_monday(may1), may1 + 5 * DAY);
    assert_eq!(next_day(may1 + HOUR), may1 + DAY);
}

// ----- rules -----------------------------------------------------------------------------

#[tokio::test]
async fn admins_manage_rules_and_validation_names_the_field() {
    let server = rewards_server(toml::Table::new()).await;
    let admin = admin_token(&server).await;
    let user = new_user(&server, "ruleuser").await;
    let plain_admin = user_token(&server, "roleonly", &["mgpass:admin"], "openid").await;

    // Only admins: no token 401, a user 403, an admin without the scope 403.
    let rule = json!({"event_type": "purchase", "points": 5});
    for (token, want) in [
        (None, 401),
        (Some(user.token.as_str()), 403),
        (Some(plain_admin.as_str()), 403),
    ] {
        for (method, body) in [(Method::GET, None), (Method::POST, Some(&rule))] {
            let (s, v, _) = call(&server, method, "/api/rewards/rules", token, body, &[]).await;
            assert_eq!(s, want, "{v}");
        }
    }

    let full = json!({
        "event_type": "purchase", "platform": "ptn_shop", "tier": "Silver", "points": 2.5,
        "unit_field": "amount", "daily_cap": 100, "monthly_cap": 1000,
        "frequency": "daily", "active": true,
    });
    let created = create_rule(&server, &admin, full.clone()).await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(id, "rule_000001");
    for (k, v) in full.as_object().unwrap() {
        assert_eq!(&created[k], v, "{k} in {created}");
    }

    for (body, field) in [
        (json!({"points": 5}), "event_type"),
        (
            json!({"event_type": "bad type!", "points": 5}),
            "event_type",
        ),
        (json!({"event_type": "refund", "points": 5}), "event_type"),
        (json!({"event_type": "purchase"}), "points"),
        (json!({"event_type": "purchase", "points": -1}), "points"),
        (json!({"event_type": "purchase", "points": "5"}), "points"),
        (
            json!({"event_type": "purchase", "points": 5, "tier": "Diamond"}),
            "tier",
        ),
        (
            json!({"event_type": "purchase", "points": 5, "platform": ""}),
            "platform",
        ),
        (
            json!({"event_type": "purchase", "points": 5, "unit_field": "a b"}),
            "unit_field",
        ),
        (
            json!({"event_type": "purchase", "points": 5, "daily_cap": 0}),
            "daily_cap",
        ),
        (
            json!({"event_type": "purchase", "points": 5, "daily_cap": 50, "monthly_cap": 10}),
            "daily_cap",
        ),
        (
            json!({"event_type": "purchase", "points": 5, "monthly_cap": 1.5}),
            "monthly_cap",
        ),
        (
            json!({"event_type": "purchase", "points": 5, "frequency": "hourly"}),
            "frequency",
        ),
        (
            json!({"event_type": "purchase", "points": 5, "active": "yes"}),
            "active",
        ),
        (
            json!({"event_type": "purchase", "points": 5, "pionts": 5}),
            "pionts",
        ),
        (json!([1, 2]), "body"),
    ] {
        let (s, v, _) = call(
            &server,
            Method::POST,
            "/api/rewards/rules",
            Some(&admin),
            Some(&body),
            &[],
        )
        .await;
        assert_error(s, &v, 400, "invalid_request");
        let message = v["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }
    // Nothing was created by the refused requests.
    let (s, list) = get(&server, "/api/rewards/rules", &admin).await;
    assert_eq!(s, 200);
    assert_eq!(list["rules"].as_array().unwrap().len(), 1, "{list}");

    let path = format!("/api/rewards/rules/{id}");
    let (s, one) = get(&server, &path, &admin).await;
    assert_eq!((s, &one), (200, &created));

    // PUT replaces; a fetched rule can be sent back changed.
    let mut changed = one.clone();
    changed["points"] = json!(3);
    changed["tier"] = Value::Null;
    changed["frequency"] = json!("weekly");
    let (s, put, _) = call(
        &server,
        Method::PUT,
        &path,
        Some(&admin),
        Some(&changed),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{put}");
    assert_eq!(put["id"], id.as_str());
    assert_eq!(put["points"], 3.0);
    assert_eq!(put["tier"], Value::Null);
    assert_eq!(put["frequency"], "weekly");
    // A bad PUT names the field and changes nothing.
    let bad = json!({"event_type": "purchase", "points": 0});
    let (s, v, _) = call(&server, Method::PUT, &path, Some(&admin), Some(&bad), &[]).await;
    assert_error(s, &v, 400, "invalid_request");
    assert!(v["message"].as_str().unwrap().starts_with("points"), "{v}");
    let other_id = json!({"id": "rule_000009", "event_type": "purchase", "points": 1});
    let (s, v, _) = call(
        &server,
        Method::PUT,
        &path,
        Some(&admin),
        Some(&other_id),
        &[],
    )
    .await;
    assert_error(s, &v, 400, "invalid_request");
    let (_, after) = get(&server, &path, &admin).await;
    assert_eq!(after, put);
    // A non-admin can neither read nor change nor delete it.
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let (s, _, _) = call(&server, method, &path, Some(&user.token), Some(&bad), &[]).await;
        assert_eq!(s, 403);
    }
    let (s, _, _) = call(
        &server,
        Method::PUT,
        "/api/rewards/rules/rule_000404",
        Some(&admin),
        Some(&rule),
        &[],
    )
    .await;
    assert_eq!(s, 404);

    delete_rule(&server, &admin, &id).await;
    let (s, v) = get(&server, &path, &admin).await;
    assert_error(s, &v, 404, "not_found");
    let (s, _, _) = call(&server, Method::DELETE, &path, Some(&admin), None, &[]).await;
    assert_eq!(s, 404);
    let (_, list) = get(&server, "/api/rewards/rules", &admin).await;
    assert_eq!(list["rules"], json!([]));
    // Ids are not reused.
    let next = create_rule(&server, &admin, rule.clone()).await;
    assert_eq!(next["id"], "rule_000002");
    assert_ledger_consistent(&server, &user.id).await;
}

// ----- earning ---------------------------------------------------------------------------

#[tokio::test]
async fn each_rule_shape_awards_the_documented_points() {
    let server = rewards_server(toml::Table::new()).await;
    let admin = admin_token(&server).await;
    let types = ["signup", "purchase", "basket", "survey", "review"];
    let a = new_partner(&server, &types, 1.0, None).await;
    let b = new_partner(&server, &types, 1.5, None).await;
    let user = new_user(&server, "earner").await;
    let flat = create_rule(
        &server,
        &admin,
        json!({"event_type": "signup", "points": 50}),
    )
    .await;
    create_rule(
        &server,
        &admin,
        json!({"event_type": "purchase", "points": 0.5, "unit_field": "amount"}),
    )
    .await;
    create_rule(
        &server,
        &admin,
        json!({"event_type": "basket", "points": 3, "unit_field": "item_count"}),
    )
    .await;
    create_rule(
        &server,
        &admin,
        json!({"event_type": "survey", "points": 0.29, "unit_field": "amount"}),
    )
    .await;

    let u = user.id.as_str();
    let mut expected = 0;
    for (partner, event_type, metadata, points) in [
        // flat
        (&a, "signup", json!({}), 50),
        // per unit of amount, rounded down: 0.5 × 99.99 = 49.995
        (
            &a,
            "purchase",
            json!({"amount": 99.99, "currency": "GHS"}),
            49,
        ),
        // no unit field in the event: nothing
        (&a, "purchase", json!({}), 0),
        // per item
        (&a, "basket", json!({"item_count": 4}), 12),
        // 0.29 × 100 is 28.999… in binary; it still earns 29
        (&a, "survey", json!({"amount": 100}), 29),
        // no rule for the event type: accepted with 0 points
        (&a, "review", json!({}), 0),
        // partner multiplier 1.5
        (&b, "signup", json!({}), 75),
        // 0.5 × 33 × 1.5 = 24.75 → 24
        (&b, "purchase", json!({"amount": 33}), 24),
        // 3 × 3 × 1.5 = 13.5 → 13
        (&b, "basket", json!({"item_count": 3}), 13),
    ] {
        let got = award(&server, partner, u, event_type, metadata.clone()).await;
        assert_eq!(got, points, "{event_type} {metadata}");
        expected += points;
    }
    let s = summary(&server, &user.token).await;
    assert_eq!(s["total_points"], expected);
    assert_eq!(s["lifetime_earned"], expected);
    assert_eq!(s["tier"], "Bronze");

    // Every award is an `earn` entry naming the partner, event, reference and rule.
    let entries = server
        .app()
        .store
        .ledger_entries(u, None, 100)
        .expect("entries");
    assert_eq!(entries.len(), 7, "zero-point events write nothing");
    let signup = entries.last().unwrap();
    assert_eq!(signup.points, 50);
    assert_eq!(signup.partner.as_deref(), Some(a.id.as_str()));
    assert_eq!(signup.event_type.as_deref(), Some("signup"));
    assert!(signup.reference.as_deref().unwrap().starts_with("ref_"));
    assert_eq!(signup.note.as_deref(), flat["id"].as_str());
    assert!(
        entries
            .iter()
            .all(|e| e.kind == mgpass::store::LedgerKind::Earn)
    );
    assert_eq!(assert_ledger_consistent(&server, u).await, expected);
}

#[tokio::test]
async fn rules_match_in_precedence_order() {
    let server = rewards_server(toml::Table::new()).await;
    let admin = admin_token(&server).await;
    let p = new_partner(&server, &["purchase", "bonus"], 1.0, None).await;
    let q = new_partner(&server, &["purchase", "bonus"], 1.0, None).await;
    let bronze = new_user(&server, "bronzeuser").await;
    let silver = new_user(&server, "silveruser").await;

    let rule = |body: Value| {
        let mut body = body;
        body["event_type"] = json!("purchase");
        body
    };
    // Created first, so the oldest of its level, but inactive.
    let inactive = create_rule(
        &server,
        &admin,
        rule(json!({"platform": p.id, "tier": "Bronze", "points": 1000, "active": false})),
    )
    .await;
    let any = create_rule(&server, &admin, rule(json!({"points": 1}))).await;
    let tier = create_rule(
        &server,
        &admin,
        rule(json!({"tier": "Bronze", "points": 2})),
    )
    .await;
    let platform = create_rule(
        &server,
        &admin,
        rule(json!({"platform": p.id, "points": 3})),
    )
    .await;
    let both = create_rule(
        &server,
        &admin,
        rule(json!({"platform": p.id, "tier": "Bronze", "points": 4})),
    )
    .await;
    create_rule(
        &server,
        &admin,
        rule(json!({"platform": p.id, "tier": "Silver", "points": 100})),
    )
    .await;
    let newer_both = create_rule(
        &server,
        &admin,
        rule(json!({"platform": p.id, "tier": "bronze", "points": 7})),
    )
    .await;
    create_rule(
        &server,
        &admin,
        json!({"event_type": "bonus", "points": 1000}),
    )
    .await;

    let b = bronze.id.as_str();
    // platform + event + tier (oldest active of that level)
    assert_eq!(award(&server, &p, b, "purchase", json!({})).await, 4);
    // another platform: event + tier on any platform
    assert_eq!(award(&server, &q, b, "purchase", json!({})).await, 2);

    // A Silver user gets the Silver rule for P (×1.5), and for Q the event-only rule.
    assert_eq!(
        award(&server, &q, &silver.id, "bonus", json!({})).await,
        1000
    );
    assert_eq!(summary(&server, &silver.token).await["tier"], "Silver");
    assert_eq!(
        award(&server, &p, &silver.id, "purchase", json!({})).await,
        150
    );
    assert_eq!(
        award(&server, &q, &silver.id, "purchase", json!({})).await,
        1
    );

    // Remove levels one by one.
    delete_rule(&server, &admin, both["id"].as_str().unwrap()).await;
    assert_eq!(
        award(&server, &p, b, "purchase", json!({})).await,
        7,
        "the next oldest of the same level: {newer_both}"
    );
    delete_rule(&server, &admin, newer_both["id"].as_str().unwrap()).await;
    assert_eq!(award(&server, &p, b, "purchase", json!({})).await, 3);
    delete_rule(&server, &admin, platform["id"].as_str().unwrap()).await;
    assert_eq!(award(&server, &p, b, "purchase", json!({})).await, 2);
    delete_rule(&server, &admin, tier["id"].as_str().unwrap()).await;
    assert_eq!(award(&server, &p, b, "purchase", json!({})).await, 1);
    // Activating the old rule makes it the match again.
    let path = format!("/api/rewards/rules/{}", inactive["id"].as_str().unwrap());
    let mut on = inactive.clone();
    on["active"] = json!(true);
    let (s, v, _) = call(&server, Method::PUT, &path, Some(&admin), Some(&on), &[]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(award(&server, &p, b, "purchase", json!({})).await, 1000);
    delete_rule(&server, &admin, any["id"].as_str().unwrap()).await;
    assert_eq!(
        award(&server, &q, b, "purchase", json!({})).await,
        0,
        "no rule left for Q: accepted with 0"
    );

    assert_eq!(
        assert_ledger_consistent(&server, b).await,
        4 + 2 + 7 + 3 + 2 + 1 + 1000
    );
    assert_eq!(
        assert_ledger_consistent(&server, &silver.id).await,
        1000 + 150 + 1
    );
}

#[tokio::test]
async fn crossing_1000_promotes_to_silver_with_webhook_and_multiplier() {
    let server = rewards_server(toml::Table::new()).await;
    let admin = admin_token(&server).await;
    let receiver = Receiver::start().await;
    let p = new_partner(&server, &["purchase"], 1.0, Some(receiver.uri())).await;
    let user = new_user(&server, "climber").await;
    create_rule(
        &server,
        &admin,
        json!({"event_type": "purchase", "points": 1, "unit_field": "amount"}),
    )
    .await;
    let u = user.id.as_str();

    assert_eq!(
        award(&server, &p, u, "purchase", json!({"amount": 999})).await,
        999
    );
    let s = summary(&server, &user.token).await;
    assert_eq!(s["tier"], "Bronze");
    assert_eq!(
        s["tier_details"],
        json!({"name": "Bronze", "min_points": 0, "multiplier": 1.0})
    );
    // The award that crosses 1,000 is at the old tier's multiplier and promotes.
    assert_eq!(
        award(&server, &p, u, "purchase", json!({"amount": 1})).await,
        1
    );
    let s = summary(&server, &user.token).await;
    assert_eq!(
        s,
        json!({
            "total_points": 1000, "lifetime_earned": 1000, "tier": "Silver",
            "tier_details": {"name": "Silver", "min_points": 1000, "multiplier": 1.5},
        })
    );
    // Later awards are ×1.5.
    assert_eq!(
        award(&server, &p, u, "purchase", json!({"amount": 10})).await,
        15
    );
    assert_eq!(
        award(&server, &p, u, "purchase", json!({"amount": 3})).await,
        4
    );

    // Spending never lowers the tier.
    credit(&server, &admin, u, -1019).await;
    let s = summary(&server, &user.token).await;
    assert_eq!(s["total_points"], 0);
    assert_eq!(s["lifetime_earned"], 1019);
    assert_eq!(s["tier"], "Silver");

    // Webhooks: four points_awarded and one tier_promoted, to the partner's URL.
    let got = receiver.wait_accepted(5, || server.nudge_outbox()).await;
    let bodies: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_str(&r.body).expect("webhook JSON"))
        .collect();
    let promoted: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["event_type"] == "rewards.tier_promoted")
        .collect();
    assert_eq!(promoted.len(), 1, "{bodies:?}");
    let data = &promoted[0]["data"];
    assert_eq!(data["user_id"], u);
    assert_eq!(data["previous_tier"], "Bronze");
    assert_eq!(data["tier"], "Silver");
    assert_eq!(data["tier_details"]["multiplier"], 1.5);
    assert_eq!(data["lifetime_earned"], 1000);
    let awarded: Vec<i64> = bodies
        .iter()
        .filter(|b| b["event_type"] == "rewards.points_awarded")
        .map(|b| b["data"]["points"].as_i64().unwrap())
        .collect();
    assert_eq!(awarded.len(), 4, "{bodies:?}");
    assert_eq!(awarded.iter().sum::<i64>(), 1019);
    assert_ledger_consistent(&server, u).await;
}

#[tokio::test]
async fn caps_and_frequencies_follow_the_utc_calendar() {
    let server = rewards_server(toml::Table::new()).await;
    let admin = admin_token(&server).await;
    let types = ["steps", "survey", "signup", "checkin", "quiz", "challenge"];
    let p = new_partner(&server, &types, 1.0, None).await;
    for body in [
        json!({"event_type": "steps", "points": 10, "daily_cap": 25}),
        json!({"event_type": "survey", "points": 40, "monthly_cap": 100}),
        json!({"event_type": "signup", "points": 50, "frequency": "once"}),
        json!({"event_type": "checkin", "points": 5, "frequency": "daily"}),
        json!({"event_type": "quiz", "points": 5, "frequency": "weekly"}),
        json!({"event_type": "challenge", "points": 5, "frequency": "monthly"}),
    ] {
        create_rule(&server, &admin, body).await;
    }
    let earn = |user: &str, event: &'static str| {
        let (server, p, user) = (&server, &p, user.to_string());
        async move { award(server, p, &user, event, json!({})).await }
    };

    // Days: start at 01:00 UTC so the test never straddles a midnight by accident.
    let daily = new_user(&server, "dailyuser").await;
    let d = daily.id.as_str();
    advance_to(&server, next_day(now_ms(&server)) + HOUR);
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(earn(d, "steps").await);
    }
    assert_eq!(
        got,
        [10, 10, 5, 0],
        "daily cap 25: the third gets what fits"
    );
    assert_eq!((earn(d, "signup").await, earn(d, "signup").await), (50, 0));
    assert_eq!((earn(d, "checkin").await, earn(d, "checkin").await), (5, 0));
    // 23:59:59 is still the same day.
    advance_to(&server, next_day(now_ms(&server)) - 1000);
    assert_eq!(earn(d, "steps").await, 0);
    assert_eq!(earn(d, "checkin").await, 0);
    // Midnight UTC starts a new day; `once` stays spent.
    advance_to(&server, next_day(now_ms(&server)));
    assert_eq!(earn(d, "steps").await, 10);
    assert_eq!(earn(d, "checkin").await, 5);
    assert_eq!(earn(d, "signup").await, 0);
    assert_eq!(
        assert_ledger_consistent(&server, d).await,
        25 + 50 + 5 + 10 + 5
    );

    // ISO weeks, Monday to Sunday.
    let weekly = new_user(&server, "weeklyuser").await;
    let w = weekly.id.as_str();
    let monday = next_monday(now_ms(&server));
    advance_to(&server, monday + HOUR);
    assert_eq!(earn(w, "quiz").await, 5);
    advance_to(&server, monday + 6 * DAY + 23 * HOUR);
    assert_eq!(earn(w, "quiz").await, 0, "Sunday 23:00 is the same week");
    advance_to(&server, monday + 7 * DAY + 30 * MINUTE);
    assert_eq!(earn(w, "quiz").await, 5, "Monday 00:30 is a new week");
    assert_eq!(assert_ledger_consistent(&server, w).await, 10);

    // Months.
    let monthly = new_user(&server, "monthlyuser").await;
    let m = monthly.id.as_str();
    let first = next_month(now_ms(&server));
    advance_to(&server, first + HOUR);
    assert_eq!(earn(m, "challenge").await, 5);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(earn(m, "survey").await);
    }
    advance_to(&server, first + 27 * DAY);
    got.push(earn(m, "survey").await);
    assert_eq!(got, [40, 40, 20, 0], "monthly cap 100, also on another day");
    assert_eq!(earn(m, "challenge").await, 0, "day 28 is the same month");
    advance_to(&server, next_month(now_ms(&server)) + MINUTE);
    assert_eq!(earn(m, "challenge").await, 5);
    assert_eq!(earn(m, "survey").await, 40);
    assert_eq!(assert_ledger_consistent(&server, m).await, 5 + 100 + 5 + 40);
}

// ----- balance and history ---------------------------------------------------------------

#[tokio::test]
async fn balance_and_history_are_paged_newest_first() {
    let server = rewards_server(table(&format!("callback_secret = {SECRET:?}"))).await;
    let admin = admin_token(&server).await;
    let p = new_partner(&server, &["purchase", "refund"], 1.0, None).await;
    let user = new_user(&server, "historian").await;
    let u = user.id.as_str();
    create_rule(
        &server,
        &admin,
        json!({"event_type": "purchase", "points": 1, "unit_field": "amount"}),
    )
    .await;

    // Fresh account: zero, Bronze, no history.
    let s = summary(&server, &user.token).await;
    assert_eq!(
        keys(&s),
        ["lifetime_earned", "tier", "tier_details", "total_points"]
    );
    assert_eq!(
        keys(&s["tier_details"]),
        ["min_points", "multiplier", "name"]
    );
    assert_eq!(s["total_points"], 0);
    let (st, h) = history(&server, &user.token, "").await;
    assert_eq!(st, 200);
    assert_eq!(h, json!({"entries": [], "next_cursor": null}));

    // 21 earns, an adjustment, a redemption, a partner reversal: one of each kind.
    let mut references = Vec::new();
    for i in 1..=21 {
        let reference = format!("order-{i}");
        let metadata = json!({"reference_id": reference, "amount": 10 * i});
        let (s, v, _) = post_event(&server, &p, u, "purchase", metadata).await;
        assert_eq!(s, 200, "{v}");
        references.push(reference);
        server.clock.advance_secs(1);
    }
    credit(&server, &admin, u, -5).await;
    server.clock.advance_secs(1);
    let (s, r, _) = redeem(&server, &user.token, &redemption(250), None).await;
    assert_eq!(s, 201, "{r}");
    server.clock.advance_secs(1);
    let refund = json!({"reference_id": "refund-1", "original_reference_id": "order-21"});
    let (s, v, _) = post_event(&server, &p, u, "refund", refund).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["points_awarded"].as_i64().unwrap() < 0, "{v}");

    // Page through 10 at a time.
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            None => "?limit=10".to_string(),
            Some(c) => format!("?limit=10&cursor={c}"),
        };
        let (s, page) = history(&server, &user.token, &query).await;
        assert_eq!(s, 200, "{page}");
        let entries = page["entries"].as_array().unwrap().clone();
        pages += 1;
        all.extend(entries.clone());
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(entries.len(), 10);
                cursor = Some(c.to_string());
            }
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                break;
            }
        }
        assert!(pages < 10, "paging ends");
    }
    assert_eq!(pages, 3);
    assert_eq!(all.len(), 24);
    // Newest first: each entry's balance before it is the next (older) one's after.
    for pair in all.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        assert_eq!(
            newer["balance_after"].as_i64().unwrap() - newer["points"].as_i64().unwrap(),
            older["balance_after"].as_i64().unwrap(),
            "{newer} after {older}"
        );
        assert!(newer["time"].as_str().unwrap() >= older["time"].as_str().unwrap());
    }
    let ids: BTreeSet<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 24, "no entry twice across pages");
    let kinds: Vec<&str> = all
        .iter()
        .take(4)
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["refund", "redeem", "adjust", "earn"]);
    for e in &all {
        assert_eq!(
            keys(e),
            [
                "balance_after",
                "event_type",
                "id",
                "kind",
                "note",
                "partner",
                "points",
                "reference",
                "time"
            ],
            "{e}"
        );
    }
    let oldest = all.last().unwrap();
    assert_eq!(oldest["kind"], "earn");
    assert_eq!(oldest["points"], 10);
    assert_eq!(oldest["partner"], p.id.as_str());
    assert_eq!(oldest["event_type"], "purchase");
    assert_eq!(oldest["reference"], "order-1");
    assert_eq!(all[1]["reference"], r["redemption_id"]);
    assert_eq!(all[0]["event_type"], "refund");
    assert_eq!(all[0]["reference"], "refund-1");

    // The default page is 20; bad parameters are named.
    let (_, page) = history(&server, &user.token, "").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 20);
    assert_eq!(page["entries"][0], all[0]);
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?cursor=abc", "cursor"),
        ("?cursor=0", "cursor"),
    ] {
        let (s, v) = history(&server, &user.token, query).await;
        assert_error(s, &v, 400, "invalid_request");
        assert!(
            v["message"].as_str().unwrap().starts_with(field),
            "{query}: {v}"
        );
    }
    // The summary agrees with the newest entry.
    let s = summary(&server, &user.token).await;
    assert_eq!(s["total_points"], all[0]["balance_after"]);
    // Another user sees only their own (empty) history.
    let other = new_user(&server, "stranger").await;
    let (_, h) = history(&server, &other.token, "").await;
    assert_eq!(h["entries"], json!([]));
    // Without a token: 401 from the host.
    let (s, _, _) = call(
        &server,
        Method::GET,
        "/api/account/rewards",
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(s, 401);
    assert_ledger_consistent(&server, u).await;
    assert_ledger_consistent(&server, &other.id).await;
}

// ----- cashback --------------------------------------------------------------------------

#[tokio::test]
async fn every_redemption_check() {
    let server = rewards_server(toml::Table::new()).await;
    let admin = admin_token(&server).await;
    advance_to(&server, next_day(now_ms(&server)) + HOUR);
    let user = new_user(&server, "redeemer").await;
    let u = user.id.as_str();
    credit(&server, &admin, u, 2000).await;
    let t = user.token.as_str();

    // Validation, before anything is written.
    let (s, v, _) = redeem(&server, t, &redemption(249), None).await;
    assert_error(s, &v, 400, "invalid_request");
    assert!(v["message"].as_str().unwrap().starts_with("points"), "{v}");
    for (body, field) in [
        (
            json!({"points": 300, "phone_number": "12345", "network": "mtn"}),
            "phone_number",
        ),
        (
            json!({"points": 300, "phone_number": "+44 7700 900123", "network": "mtn"}),
            "phone_number",
        ),
        (json!({"points": 300, "network": "mtn"}), "phone_number"),
        (
            json!({"points": 300, "phone_number": "0241234567", "network": "vodafone"}),
            "network",
        ),
        (
            json!({"points": 300, "phone_number": "0241234567"}),
            "network",
        ),
        (
            json!({"points": 30.5, "phone_number": "0241234567", "network": "mtn"}),
            "points",
        ),
    ] {
        let (s, v, _) = redeem(&server, t, &body, None).await;
        assert_error(s, &v, 400, "invalid_request");
        assert!(
            v["message"].as_str().unwrap().starts_with(field),
            "{body}: {v}"
        );
    }
    assert_eq!(summary(&server, t).await["total_points"], 2000);

    // The first: 201 with exactly the published fields.
    let body = json!({"points": 300, "phone_number": "024 123-4567", "network": "MTN"});
    let (s, first, _) = redeem(&server, t, &body, None).await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(
        keys(&first),
        [
            "fee_amount",
            "fee_rate",
            "gross_amount",
            "net_amount",
            "points",
            "rate",
            "redemption_id",
            "status",
            "tier"
        ]
    );
    assert!(first["redemption_id"].as_str().unwrap().starts_with("cb_"));
    assert_eq!(first["status"], "pending");
    assert_eq!(first["points"], 300);
    assert_eq!(first["tier"], "Bronze");
    assert_eq!(first["rate"], 0.01);
    assert_eq!(first["gross_amount"], 3.0);
    assert_eq!(first["fee_rate"], 0.05);
    assert_eq!(first["fee_amount"], 0.15);
    assert_eq!(first["net_amount"], 2.85);
    assert_eq!(summary(&server, t).await["total_points"], 1700);

    // 60 minutes between redemptions.
    server.clock.advance_ms(59 * MINUTE);
    let (s, v, _) = redeem(&server, t, &redemption(300), None).await;
    assert_error(s, &v, 429, "fraud_check_failed");
    server.clock.advance_ms(MINUTE);
    let (s, v, _) = redeem(&server, t, &redemption(300), None).await;
    assert_eq!(s, 201, "{v}");
    server.clock.advance_ms(60 * MINUTE);
    let (s, v, _) = redeem(&server, t, &redemption(300), None).await;
    assert_eq!(s, 201, "{v}");
    // At most 3 a day.
    server.clock.advance_ms(2 * HOUR);
    let (s, v, _) = redeem(&server, t, &redemption(300), None).await;
    assert_error(s, &v, 429, "fraud_check_failed");
    assert!(v["message"].as_str().unwrap().contains('3'), "{v}");
    assert_eq!(summary(&server, t).await["total_points"], 1100);
    // The next UTC day counts afresh.
    advance_to(&server, next_day(now_ms(&server)) + MINUTE);
    let (s, v, _) = redeem(&server, t, &redemption(300), None).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(summary(&server, t).await["total_points"], 800);
    let redeemed: Vec<_> = server
        .app()
        .store
        .ledger_entries(u, None, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == mgpass::store::LedgerKind::Redeem)
        .collect();
    assert_eq!(redeemed.len(), 4);
    assert!(redeemed.iter().all(|e| e.points == -300));
    assert_ledger_consistent(&server, u).await;

    // Too few points: 400 insufficient_points, and the refused attempt counts for nothing.
    let poor = new_user(&server, "poor").await;
    credit(&server, &admin, &poor.id, 260).await;
    let (s, v, _) = redeem(&server, &poor.token, &redemption(300), None).await;
    assert_error(s, &v, 400, "insufficient_points");
    let (s, v, _) = redeem(&server, &poor.token, &redemption(250), None).await;
    assert_eq!(s, 201, "no 60-minute wait after a refused attempt: {v}");
    assert_eq!(assert_ledger_consistent(&server, &poor.id).await, 10);

    // At most 500 currency units a day (gross).
    let rich = new_user(&server, "rich").await;
    credit(&server, &admin, &rich.id, 100_000).await;
    let (s, v, _) = redeem(&server, &rich.token, &redemption(50_001), None).await;
    assert_error(s, &v, 429, "fraud_check_failed");
    assert!(v["message"].as_str().unwrap().contains("500"), "{v}");
    let (s, v, _) = redeem(&server, &rich.token, &redemption(50_000), None).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["gross_amount"], 500.0);
    server.clock.advance_ms(61 * MINUTE);
    let (s, v, _) = redeem(&server, &rich.token, &redemption(250), None).await;
    assert_error(s, &v, 429, "fraud_check_failed");
    assert_eq!(assert_ledger_consistent(&server, &rich.id).await, 50_000);

    // Idempotency-Key: a retry returns the first result and debits once.
    let retry = new_user(&server, "retrier").await;
    credit(&server, &admin, &retry.id, 1000).await;
    let (s, once, _) = redeem(&server, &retry.token, &redemption(300), Some("pay-1")).await;
    assert_eq!(s, 201, "{once}");
    let (s, again, headers) = redeem(&server, &retry.token, &redemption(300), Some("pay-1")).await;
    assert_eq!(s, 201, "{again}");
    assert_eq!(again, once);
    assert_eq!(headers["idempotent-replayed"], "true");
    let (s, v, _) = redeem(&server, &retry.token, &redemption(400), Some("pay-1")).await;
    assert_error(s, &v, 409, "idempotency_conflict");
    // A new key is a new redemption (and meets the 60-minute check).
    let (s, v, _) = redeem(&server, &retry.token, &redemption(300), Some("pay-2")).await;
    assert_error(s, &v, 429, "fraud_check_failed");
    // The key is per user.
    let (s, v, _) = redeem(&server, &rich.token, &redemption(300), Some("pay-1")).await;
    assert_error(s, &v, 429, "fraud_check_failed");
    assert_eq!(assert_ledger_consistent(&server, &retry.id).await, 700);
}

#[tokio::test]
async fn twenty_concurrent_redemptions_never_overdraw() {
    let server = rewards_server(table(
        "[limits]\nmax_redemptions_per_day = 1000\nmax_amount_per_day = 100000\nmin_minutes_between = 0\n",
    ))
    .await;
    let admin = admin_token(&server).await;
    let user = new_user(&server, "racer").await;
    credit(&server, &admin, &user.id, 5000).await;

    // 20 × 300 = 6000 > 5000: at most 16 fit.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = server.http();
        let url = server.url("/api/account/cashback/redeem");
        let token = user.token.clone();
        let phone = format!("02412345{i:02}");
        tasks.spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"points": 300, "phone_number": phone, "network": "telecel"}))
                .send()
                .await
                .expect("redeem");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        });
    }
    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    while let Some(done) = tasks.join_next().await {
        let (status, body) = done.expect("task");
        match status {
            201 => {
                let id = body["redemption_id"].as_str().unwrap().to_string();
                assert!(accepted.insert(id), "a redemption id twice: {body}");
            }
            400 => {
                assert_eq!(body["error"], "insufficient_points", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted.len(), 16, "every redemption that fits is accepted");
    assert_eq!(refused, 4);
    let balance = assert_ledger_consistent(&server, &user.id).await;
    assert_eq!(balance, 5000 - 300 * accepted.len() as i64);
    // Each accepted redemption is exactly one ledger entry, and nothing else was debited.
    let entries = server
        .app()
        .store
        .ledger_entries(&user.id, None, 100)
        .unwrap();
    let references: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == mgpass::store::LedgerKind::Redeem)
        .map(|e| e.reference.as_deref().unwrap())
        .collect();
    assert_eq!(references.len(), accepted.len());
    let unique: BTreeSet<String> = references.iter().map(|r| r.to_string()).collect();
    assert_eq!(unique, accepted);
    assert_eq!(summary(&server, &user.token).await["total_points"], balance);
}

#[tokio::test]
async fn payout_callbacks_move_the_status_and_refund_failures() {
    let server = rewards_server(table(&format!("callback_secret = {SECRET:?}"))).await;
    let admin = admin_token(&server).await;
    advance_to(&server, next_day(now_ms(&server)) + HOUR);
    let user = new_user(&server, "payee").await;
    let u = user.id.as_str();
    credit(&server, &admin, u, 1000).await;

    // pending → processing → completed.
    let (s, r, _) = redeem(&server, &user.token, &redemption(300), None).await;
    assert_eq!(s, 201, "{r}");
    let done = r["redemption_id"].as_str().unwrap().to_string();
    let (s, v) = callback(&server, &done, "processing", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "processing");
    let (s, v) = callback(&server, &done, "completed", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["redemption_id"], done.as_str());
    // The same report again is a provider retry: 200, nothing changes.
    let (s, v) = callback(&server, &done, "completed", None).await;
    assert_eq!((s, &v["status"]), (200, &json!("completed")));
    // completed → failed is illegal: 409, no refund.
    let (s, v) = callback(&server, &done, "failed", Some("late")).await;
    assert_error(s, &v, 409, "invalid_transition");
    assert_eq!(summary(&server, &user.token).await["total_points"], 700);

    // pending → failed refunds the points in the same call.
    server.clock.advance_ms(61 * MINUTE);
    let (s, r, _) = redeem(&server, &user.token, &redemption(250), None).await;
    assert_eq!(s, 201, "{r}");
    let failed = r["redemption_id"].as_str().unwrap().to_string();
    assert_eq!(summary(&server, &user.token).await["total_points"], 450);
    let (s, v) = callback(&server, &failed, "failed", Some("number not registered")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["reason"], "number not registered");
    assert_eq!(summary(&server, &user.token).await["total_points"], 700);
    let (_, h) = history(&server, &user.token, "?limit=1").await;
    let refund = &h["entries"][0];
    assert_eq!(refund["kind"], "refund");
    assert_eq!(refund["points"], 250);
    assert_eq!(refund["reference"], failed.as_str());
    // Reported again: no second refund; failed → completed: 409.
    let (s, _) = callback(&server, &failed, "failed", Some("number not registered")).await;
    assert_eq!(s, 200);
    let (s, v) = callback(&server, &failed, "completed", None).await;
    assert_error(s, &v, 409, "invalid_transition");
    assert_eq!(summary(&server, &user.token).await["total_points"], 700);

    // processing → cancelled refunds too.
    server.clock.advance_ms(61 * MINUTE);
    let (s, r, _) = redeem(&server, &user.token, &redemption(400), None).await;
    assert_eq!(s, 201, "{r}");
    let cancelled = r["redemption_id"].as_str().unwrap().to_string();
    assert_eq!(
        callback(&server, &cancelled, "processing", None).await.0,
        200
    );
    assert_eq!(summary(&server, &user.token).await["total_points"], 300);
    let (s, v) = callback(&server, &cancelled, "cancelled", None).await;
    assert_eq!((s, &v["status"]), (200, &json!("cancelled")));
    assert_eq!(summary(&server, &user.token).await["total_points"], 700);
    let (s, v) = callback(&server, &cancelled, "processing", None).await;
    assert_error(s, &v, 409, "invalid_transition");

    // Signatures: absent, wrong, for another body, with another secret → 401, no change.
    // (A new day: three redemptions a day are allowed.)
    advance_to(&server, next_day(now_ms(&server)) + HOUR);
    let (s, r, _) = redeem(&server, &user.token, &redemption(250), None).await;
    assert_eq!(s, 201, "{r}");
    let pending = r["redemption_id"].as_str().unwrap().to_string();
    let body = json!({"cashback_ID": pending, "status": "failed", "reason": "x"}).to_string();
    let other_body = json!({"cashback_ID": pending, "status": "completed"}).to_string();
    for signature in [
        None,
        Some(String::new()),
        Some("not-hex".to_string()),
        Some("00".repeat(32)),
        Some(sign(SECRET, other_body.as_bytes())),
        Some(sign("another-secret-0123456789", body.as_bytes())),
    ] {
        let (s, v) = callback_raw(&server, &body, signature.as_deref()).await;
        assert_error(s, &v, 401, "invalid_signature");
    }
    assert_eq!(
        summary(&server, &user.token).await["total_points"],
        450,
        "no refund"
    );
    // A bearer token is no substitute for the signature.
    let (s, v, _) = call(
        &server,
        Method::POST,
        "/api/cashback/callback",
        Some(&admin),
        Some(&serde_json::from_str::<Value>(&body).unwrap()),
        &[],
    )
    .await;
    assert_error(s, &v, 401, "invalid_signature");
    // The `sha256=` form is accepted.
    let signature = format!("sha256={}", sign(SECRET, other_body.as_bytes()));
    let (s, v) = callback_raw(&server, &other_body, Some(&signature)).await;
    assert_eq!((s, &v["status"]), (200, &json!("completed")), "{v}");
    // An unknown redemption, correctly signed: 404.
    let (s, v) = callback(&server, "cb_000000000000000000000000", "completed", None).await;
    assert_error(s, &v, 404, "not_found");
    assert_eq!(assert_ledger_consistent(&server, u).await, 450);

    // Without a configured secret every callback is refused.
    let unconfigured = rewards_server(toml::Table::new()).await;
    let body = json!({"cashback_ID": "cb_x", "status": "completed"}).to_string();
    let (s, v) = callback_raw(&unconfigured, &body, Some(&sign(SECRET, body.as_bytes()))).await;
    assert_error(s, &v, 401, "invalid_signature");
}

// ----- reversals, claims, admin ----------------------------------------------------------

#[tokio::test]
async fn a_partner_refund_claws_back_exactly_the_award_once() {
    let server = rewards_server(toml::Table::new()).await;
    let admin = admin_token(&server).await;
    let p = new_partner(&server, &["purchase", "refund"], 1.0, None).await;
    let q = new_partner(&server, &["purchase", "refund"], 1.0, None).await;
    let user = new_user(&server, "refunder").await;
    let u = user.id.as_str();
    create_rule(
        &server,
        &admin,
        json!({"event_type": "purchase", "points": 1, "unit_field": "amount"}),
    )
    .await;

    let order1 = json!({"reference_id": "order-1", "amount": 600});
    let order2 = json!({"reference_id": "order-2", "amount": 500});
    assert_eq!(event(&server, &p, u, "purchase", order1).await.0, 600);
    assert_eq!(event(&server, &p, u, "purchase", order2).await.0, 500);
    let s = summary(&server, &user.token).await;
    assert_eq!(
        (s["total_points"].as_i64(), s["tier"].as_str()),
        (Some(1100), Some("Silver"))
    );

    // The reversal takes back exactly order-2's award, lifetime included.
    let refund = json!({"reference_id": "refund-1", "original_reference_id": "order-2"});
    assert_eq!(
        event(&server, &p, u, "refund", refund.clone()).await.0,
        -500
    );
    let s = summary(&server, &user.token).await;
    assert_eq!(s["total_points"], 600);
    assert_eq!(s["lifetime_earned"], 600);
    assert_eq!(s["tier"], "Bronze");
    let newest = &server.app().store.ledger_entries(u, None, 1).unwrap()[0];
    assert_eq!(newest.kind, mgpass::store::LedgerKind::Refund);
    assert_eq!(newest.points, -500);
    assert_eq!(newest.reference.as_deref(), Some("refund-1"));
    // The same request again is a replay; a new refund of the same order reverses nothing.
    let (points, headers) = event(&server, &p, u, "refund", refund).await;
    assert_eq!(points, -500);
    assert_eq!(headers["idempotent-replayed"], "true");
    let again = json!({"reference_id": "refund-2", "original_reference_id": "order-2"});
    assert_eq!(event(&server, &p, u, "refund", again).await.0, 0);
    // Another partner's refund, an unknown reference, no reference: nothing.
    let foreign = json!({"reference_id": "refund-3", "original_reference_id": "order-1"});
    assert_eq!(event(&server, &q, u, "refund", foreign).await.0, 0);
    let unknown = json!({"reference_id": "refund-4", "original_reference_id": "order-999"});
    assert_eq!(event(&server, &p, u, "refund", unknown).await.0, 0);
    assert_eq!(
        event(
            &server,
            &p,
            u,
            "refund",
            json!({"reference_id": "refund-5"})
        )
        .await
        .0,
        0
    );
    assert_eq!(summary(&server, &user.token).await["total_points"], 600);

    // Points already spent: the balance stops at zero, lifetime drops by the award.
    credit(&server, &admin, u, -500).await;
    let refund = json!({"reference_id": "refund-6", "original_reference_id": "order-1"});
    assert_eq!(event(&server, &p, u, "refund", refund).await.0, -100);
    let s = summary(&server, &user.token).await;
    assert_eq!(
        (s["total_points"].as_i64(), s["lifetime_earned"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(assert_ledger_consistent(&server, u).await, 0);
}

#[tokio::test]
async fn fresh_access_tokens_carry_the_tier_claim() {
    let server = rewards_server(toml::Table::new()).await;
    let admin = admin_token(&server).await;
    let p = new_partner(&server, &["bonus"], 1.0, None).await;
    create_rule(
        &server,
        &admin,
        json!({"event_type": "bonus", "points": 5000}),
    )
    .await;
    let user = new_user(&server, "claimant").await;
    let (_, claims) = verify_jwt(&server, &user.token).await;
    assert_eq!(claims["mgpass:tier"], "Bronze", "{claims}");
    assert_eq!(claims["sub"], user.id.as_str());

    assert_eq!(award(&server, &p, &user.id, "bonus", json!({})).await, 5000);
    let fresh = login_token(&server, &user.name, "openid").await;
    let (_, claims) = verify_jwt(&server, &fresh).await;
    assert_eq!(claims["mgpass:tier"], "Gold", "{claims}");
    // The claim is read when a token is issued: the old token keeps its tier.
    assert_eq!(jwt_payload(&user.token)["mgpass:tier"], "Bronze");
    assert_ledger_consistent(&server, &user.id).await;
}

#[tokio::test]
async fn admins_see_a_users_rewards_and_adjust_never_below_zero() {
    let server = rewards_server(toml::Table::new()).await;
    let admin = admin_token(&server).await;
    let user = new_user(&server, "adjusted").await;
    let u = user.id.as_str();
    let path = format!("/api/rewards/users/{u}");

    let (s, v) = get(&server, &path, &admin).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["user_id"], u);
    assert_eq!(v["total_points"], 0);
    assert_eq!(v["tier"], "Bronze");
    assert_eq!(v["history"]["entries"], json!([]));

    let (s, v) = adjust(&server, &admin, u, 100).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["total_points"], 100);
    assert_eq!(v["entry"]["kind"], "adjust");
    assert_eq!(v["entry"]["note"], "test adjustment");
    // Never below zero: refused whole, nothing written.
    let (s, v) = adjust(&server, &admin, u, -150).await;
    assert_error(s, &v, 400, "insufficient_points");
    let (s, v) = adjust(&server, &admin, u, -100).await;
    assert_eq!((s, &v["total_points"]), (200, &json!(0)));
    let (s, v) = adjust(&server, &admin, u, -1).await;
    assert_error(s, &v, 400, "insufficient_points");
    credit(&server, &admin, u, 40).await;

    for (body, field) in [
        (json!({"points": 0, "reason": "x"}), "points"),
        (json!({"points": 1.5, "reason": "x"}), "points"),
        (json!({"reason": "x"}), "points"),
        (json!({"points": 5}), "reason"),
        (json!({"points": 5, "reason": "  "}), "reason"),
        (json!({"points": 5, "reason": "x", "note": "y"}), "note"),
    ] {
        let adjust_path = format!("{path}/adjust");
        let (s, v, _) = call(
            &server,
            Method::POST,
            &adjust_path,
            Some(&admin),
            Some(&body),
            &[],
        )
        .await;
        assert_error(s, &v, 400, "invalid_request");
        assert!(
            v["message"].as_str().unwrap().starts_with(field),
            "{body}: {v}"
        );
    }

    let (s, v) = get(&server, &format!("{path}?limit=2"), &admin).await;
    assert_eq!(s, 200);
    assert_eq!(v["total_points"], 40);
    assert_eq!(v["lifetime_earned"], 0, "adjustments are not earnings");
    let entries = v["history"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["points"], 40);
    assert_eq!(entries[1]["points"], -100);
    assert!(v["history"]["next_cursor"].is_string());
    // The user sees the same.
    assert_eq!(summary(&server, &user.token).await["total_points"], 40);

    // Unknown users: 404. Non-admins: 403.
    let (s, v) = get(&server, "/api/rewards/users/usr_nobody", &admin).await;
    assert_error(s, &v, 404, "not_found");
    let (s, v) = adjust(&server, &admin, "usr_nobody", 5).await;
    assert_error(s, &v, 404, "not_found");
    let (s, _) = get(&server, &path, &user.token).await;
    assert_eq!(s, 403);
    let (s, _) = adjust(&server, &user.token, u, 1_000_000).await;
    assert_eq!(s, 403);
    assert_eq!(assert_ledger_consistent(&server, u).await, 40);
}

// ----- replacing the plugin --------------------------------------------------------------

/// Rewrites the server's config file with `plugin` as `[plugins.rewards]` (the reload
/// reads the plugin sections from it).
fn write_config(server: &TestServer, plugin: &str) {
    let path = server.config.source.clone().expect("a config file");
    let cache = server.config.plugin_cache_dir.clone().expect("cache dir");
    let text = format!(
        "issuer = {:?}\nlisten = {:?}\ndata_dir = \"data\"\nkeys_dir = \"keys\"\n\
         plugins_dir = \"plugins\"\nplugin_cache_dir = {:?}\n\n[plugins.rewards]\n{plugin}\n",
        server.config.issuer,
        server.config.listen.to_string(),
        cache.display().to_string(),
    );
    std::fs::write(path, text).expect("write config");
}

async fn reload(server: &TestServer) -> Value {
    let statuses = server.admin(Command::PluginReload).await.expect("reload");
    statuses
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "rewards")
        .cloned()
        .expect("rewards in the list")
}

#[tokio::test]
async fn a_replaced_plugin_changes_behaviour_after_reload_without_restart() {
    let server = TestServer::start_with(|c| {
        c.tokens.access_token_ttl = Duration::from_secs(400 * 86_400);
        let dir = c.data_dir.parent().expect("server dir").to_path_buf();
        c.source = Some(dir.join("config.toml"));
    })
    .await;
    let admin = admin_token(&server).await;
    let p = new_partner(&server, &["purchase"], 1.0, None).await;
    let user = new_user(&server, "reloaded").await;
    let u = user.id.as_str();
    create_rule(
        &server,
        &admin,
        json!({"event_type": "purchase", "points": 10}),
    )
    .await;
    credit(&server, &admin, u, 1000).await;
    assert_eq!(
        award(&server, &p, u, "purchase", json!({"amount": 7})).await,
        10
    );
    let (s, v, _) = redeem(&server, &user.token, &redemption(300), None).await;
    assert_eq!(s, 201, "{v}");

    // 1. The built-in's bytes with another configuration: Bronze earns ×3, redemptions
    //    need 500 points and no wait.
    write_config(
        &server,
        "[plugins.rewards.limits]\nmin_points = 500\nmin_minutes_between = 0\n\n\
         [[plugins.rewards.tiers]]\nname = \"Bronze\"\nmin_points = 0\nmultiplier = 3.0\n\n\
         [[plugins.rewards.tiers]]\nname = \"Silver\"\nmin_points = 100000\nmultiplier = 4.0\n",
    );
    let status = reload(&server).await;
    assert_eq!(status["state"], "loaded", "{status}");
    assert_eq!(status["source"], "built-in");
    assert_eq!(
        award(&server, &p, u, "purchase", json!({"amount": 7})).await,
        30
    );
    let (s, v, _) = redeem(&server, &user.token, &redemption(300), None).await;
    assert_error(s, &v, 400, "invalid_request");
    assert!(v["message"].as_str().unwrap().contains("500"), "{v}");
    let (s, v, _) = redeem(&server, &user.token, &redemption(500), None).await;
    assert_eq!(s, 201, "no 60-minute wait any more: {v}");
    let s = summary(&server, &user.token).await;
    assert_eq!(s["tier_details"]["multiplier"], 3.0);
    assert_eq!(s["total_points"], 1000 + 10 - 300 + 30 - 500);

    // 2. An operator's file of the same name replaces the built-in.
    let plugins_dir = server.config.plugins_dir.clone();
    std::fs::create_dir_all(&plugins_dir).unwrap();
    let file = plugins_dir.join("rewards.wasm");
    std::fs::write(&file, mgpass::plugin::testdata::FIXTURE).unwrap();
    let status = reload(&server).await;
    assert_eq!(status["state"], "loaded", "{status}");
    assert_ne!(status["source"], "built-in", "{status}");
    // The fixture awards floor(amount × partner multiplier) and mounts other routes.
    assert_eq!(
        award(&server, &p, u, "purchase", json!({"amount": 7})).await,
        7
    );
    let (s, _) = get(&server, "/api/account/rewards", &user.token).await;
    assert_eq!(s, 404, "the rewards routes are gone");
    let (s, v) = get(&server, "/api/fixture/version", &user.token).await;
    assert_eq!(s, 200, "{v}");

    // 3. Removing the file brings the built-in back, with its rules and the ledger.
    std::fs::remove_file(&file).unwrap();
    let status = reload(&server).await;
    assert_eq!(status["source"], "built-in", "{status}");
    assert_eq!(
        award(&server, &p, u, "purchase", json!({"amount": 7})).await,
        30
    );
    let (s, _) = get(&server, "/api/fixture/version", &user.token).await;
    assert_eq!(s, 404);
    let s = summary(&server, &user.token).await;
    assert_eq!(s["total_points"], 1000 + 10 - 300 + 30 - 500 + 7 + 30);
    assert_eq!(assert_ledger_consistent(&server, u).await, 277);
}

#[tokio::test]
async fn cashback_webhooks_go_to_the_configured_partners() {
    let server = TestServer::start_with(|c| {
        c.tokens.access_token_ttl = Duration::from_secs(400 * 86_400);
        let dir = c.data_dir.parent().expect("server dir").to_path_buf();
        c.source = Some(dir.join("config.toml"));
    })
    .await;
    let admin = admin_token(&server).await;
    let receiver = Receiver::start().await;
    let payout = new_partner(&server, &["payout"], 1.0, Some(receiver.uri())).await;
    // The partner id exists only now: configure it and reload.
    write_config(
        &server,
        &format!(
            "callback_secret = {SECRET:?}\nwebhook_partners = [{:?}]\n",
            payout.id
        ),
    );
    assert_eq!(reload(&server).await["state"], "loaded");
    let user = new_user(&server, "webhooked").await;
    credit(&server, &admin, &user.id, 1000).await;

    let (s, r, _) = redeem(&server, &user.token, &redemption(300), None).await;
    assert_eq!(s, 201, "{r}");
    let id = r["redemption_id"].as_str().unwrap().to_string();
    let (s, v) = callback(&server, &id, "failed", Some("wallet closed")).await;
    assert_eq!(s, 200, "{v}");

    let got = receiver.wait_accepted(3, || server.nudge_outbox()).await;
    let bodies: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_str(&r.body).expect("webhook JSON"))
        .collect();
    let of = |event_type: &str| {
        bodies
            .iter()
            .find(|b| b["event_type"] == event_type)
            .unwrap_or_else(|| panic!("no {event_type} in {bodies:?}"))["data"]
            .clone()
    };
    let redeemed = of("cashback.redeemed");
    assert_eq!(redeemed["redemption_id"], id.as_str());
    assert_eq!(redeemed["user_id"], user.id.as_str());
    assert_eq!(redeemed["phone_number"], "+233241234567");
    assert_eq!(redeemed["network"], "mtn");
    assert_eq!(redeemed["currency"], "GHS");
    let spent = of("rewards.redeemed");
    assert_eq!(spent["points"], 300);
    assert_eq!(spent["total_points"], 700);
    let processed = of("cashback.processed");
    assert_eq!(processed["status"], "failed");
    assert_eq!(processed["reason"], "wallet closed");
    assert_eq!(processed["refunded_points"], 300);
    assert_eq!(processed["total_points"], 1000);
    assert_eq!(got.len(), 3, "{bodies:?}");
    assert_eq!(assert_ledger_consistent(&server, &user.id).await, 1000);
}
