//! The service end to end over the in-memory host: every route and hook, with the
//! ledger invariant (balance = sum of entries, never negative) checked after each.

use serde_json::{Value, json};

use crate::config::Config;
use crate::host::{Caller, CallerKind, Event, HttpRequest, HttpResponse, PartnerInfo};
use crate::periods::ms_of;
use crate::service::Rewards;
use crate::signature;
use crate::testhost::MemHost;

const SECRET: &str = "provider-secret-0123456789";

fn config() -> Config {
    Config::parse(&json!({"callback_secret": SECRET, "webhook_partners": ["payout"]}).to_string())
        .unwrap()
}

struct World {
    config: Config,
    host: MemHost,
    events: u64,
}

fn admin() -> Caller {
    Caller {
        kind: CallerKind::Admin,
        subject: "root".into(),
    }
}

fn user(id: &str) -> Caller {
    Caller {
        kind: CallerKind::User,
        subject: id.into(),
    }
}

fn public() -> Caller {
    Caller {
        kind: CallerKind::Public,
        subject: String::new(),
    }
}

fn request(method: &str, path_and_query: &str, body: &str) -> HttpRequest {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    HttpRequest {
        method: method.into(),
        path: path.into(),
        query,
        body: body.as_bytes().to_vec(),
        ..HttpRequest::default()
    }
}

fn json_of(r: &HttpResponse) -> Value {
    serde_json::from_str(&r.body).unwrap()
}

impl World {
    fn new() -> World {
        World {
            config: config(),
            host: MemHost::with_users(&["alice", "bob"], ms_of(2024, 6, 3, 9, 0)),
            events: 0,
        }
    }

    fn send(&mut self, caller: &Caller, req: HttpRequest) -> (u16, Value) {
        let config = &self.config;
        let response = self
            .host
            .call(|h| Rewards::new(config, h).handle(caller, &req))
            .unwrap();
        self.host.check_ledger();
        (response.status, json_of(&response))
    }

    fn http(&mut self, caller: &Caller, method: &str, path: &str, body: Value) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.send(caller, request(method, path, &body))
    }

    fn rule(&mut self, body: Value) -> String {
        let (status, rule) = self.http(&admin(), "POST", "/api/rewards/rules", body);
        assert_eq!(status, 201, "{rule}");
        rule["id"].as_str().unwrap().to_string()
    }

    fn event_as(
        &mut self,
        partner: &str,
        multiplier: f64,
        user: &str,
        event_type: &str,
        metadata: Value,
    ) -> i64 {
        self.events += 1;
        let reference = metadata["reference_id"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| format!("ref-{}", self.events));
        let event = Event {
            event_id: format!("evt_{}", self.events),
            user_id: user.into(),
            event_type: event_type.into(),
            metadata: metadata.to_string(),
            reference_id: reference,
        };
        let partner = PartnerInfo {
            id: partner.into(),
            multiplier,
        };
        let config = &self.config;
        let points = self
            .host
            .call(|h| Rewards::new(config, h).on_event(&event, &partner))
            .unwrap();
        self.host.check_ledger();
        points
    }

    fn event(&mut self, user: &str, event_type: &str, metadata: Value) -> i64 {
        self.event_as("shop", 1.0, user, event_type, metadata)
    }

    fn summary(&mut self, id: &str) -> Value {
        let (status, body) = self.http(&user(id), "GET", "/api/account/rewards", Value::Null);
        assert_eq!(status, 200);
        body
    }

    fn redeem(&mut self, id: &str, points: i64, key: Option<&str>) -> (u16, Value) {
        let body = json!({"points": points, "phone_number": "0241234567", "network": "mtn"});
        let mut req = request("POST", "/api/account/cashback/redeem", &body.to_string());
        if let Some(key) = key {
            req.headers.push(("idempotency-key".into(), key.into()));
        }
        self.send(&user(id), req)
    }

    fn callback(&mut self, body: Value, signature: Option<String>) -> (u16, Value) {
        let text = body.to_string();
        let mut req = request("POST", "/api/cashback/callback", &text);
        let sig = signature.unwrap_or_else(|| signature::sign(SECRET.as_bytes(), text.as_bytes()));
        req.headers.push(("X-Signature".into(), sig));
        self.send(&public(), req)
    }

    fn grant(&mut self, id: &str, points: i64) {
        let body = json!({"points": points, "reason": "test"});
        let (status, _) = self.http(
            &admin(),
            "POST",
            &format!("/api/rewards/users/{id}/adjust"),
            body,
        );
        assert_eq!(status, 200);
    }
}

#[test]
fn rules_crud_and_validation() {
    let mut w = World::new();
    let (status, body) = w.http(
        &admin(),
        "POST",
        "/api/rewards/rules",
        json!({"event_type":"purchase"}),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
    assert!(body["message"].as_str().unwrap().starts_with("points:"));
    let (status, body) = w.send(&admin(), request("POST", "/api/rewards/rules", "{nope"));
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().starts_with("body:"));
    // Nothing was written by the failures.
    assert!(w.host.state.kv.is_empty());

    let id = w.rule(json!({"event_type":"purchase","points":10,"daily_cap":100}));
    assert_eq!(id, "rule_000001");
    let (status, rule) = w.http(
        &admin(),
        "GET",
        &format!("/api/rewards/rules/{id}"),
        Value::Null,
    );
    assert_eq!(status, 200);
    assert_eq!(rule["frequency"], "unlimited");
    assert_eq!(rule["active"], true);
    assert_eq!(rule["daily_cap"], 100);
    assert_eq!(rule["monthly_cap"], Value::Null);

    // PUT replaces, may send the fetched rule back, moves the event-type index.
    let mut changed = rule.clone();
    changed["event_type"] = json!("signup");
    changed["points"] = json!(50);
    let (status, updated) = w.http(
        &admin(),
        "PUT",
        &format!("/api/rewards/rules/{id}"),
        changed,
    );
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["created_at"], rule["created_at"]);
    assert_eq!(w.event("alice", "purchase", json!({})), 0);
    assert_eq!(w.event("alice", "signup", json!({})), 50);
    let (status, body) = w.http(
        &admin(),
        "PUT",
        &format!("/api/rewards/rules/{id}"),
        json!({"id":"rule_999999","event_type":"x","points":1}),
    );
    assert_eq!(
        (status, body["message"].as_str().unwrap().starts_with("id:")),
        (400, true)
    );
    let (status, _) = w.http(
        &admin(),
        "PUT",
        "/api/rewards/rules/rule_404",
        json!({"event_type":"x","points":1}),
    );
    assert_eq!(status, 404);

    let second = w.rule(json!({"event_type":"purchase","points":1,"tier":"silver"}));
    let (_, list) = w.http(&admin(), "GET", "/api/rewards/rules", Value::Null);
    let ids: Vec<&str> = list["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str(), second.as_str()]);
    assert_eq!(list["rules"][1]["tier"], "Silver");

    let (status, _) = w.http(
        &admin(),
        "DELETE",
        &format!("/api/rewards/rules/{id}"),
        Value::Null,
    );
    assert_eq!(status, 200);
    let (status, _) = w.http(
        &admin(),
        "GET",
        &format!("/api/rewards/rules/{id}"),
        Value::Null,
    );
    assert_eq!(status, 404);
    assert_eq!(w.event("alice", "signup", json!({})), 0);
    assert!(!w.host.state.kv.contains_key("rules-by-event/signup"));

    // Admin routes refuse other callers; unknown routes are 404.
    let (status, _) = w.http(&user("alice"), "GET", "/api/rewards/rules", Value::Null);
    assert_eq!(status, 403);
    let (status, _) = w.http(&admin(), "GET", "/api/rewards/nothing", Value::Null);
    assert_eq!(status, 404);
}

#[test]
fn each_rule_shape_awards_the_documented_points() {
    let mut w = World::new();
    w.rule(json!({"event_type":"signup","points":100}));
    w.rule(json!({"event_type":"purchase","points":1,"unit_field":"amount"}));
    w.rule(json!({"event_type":"purchase","platform":"shop","points":2,"unit_field":"amount"}));
    w.rule(json!({"event_type":"review","points":5,"unit_field":"item_count"}));
    assert_eq!(w.event("alice", "signup", json!({})), 100);
    // Platform rule beats the generic one; per unit; floor.
    assert_eq!(w.event("alice", "purchase", json!({"amount": 12.75})), 25);
    assert_eq!(
        w.event_as("other", 1.0, "alice", "purchase", json!({"amount": 12.75})),
        12
    );
    // Partner multiplier.
    assert_eq!(
        w.event_as("other", 1.5, "alice", "purchase", json!({"amount": 10})),
        15
    );
    assert_eq!(w.event("alice", "review", json!({"item_count": 3})), 15);
    // Missing unit field and no rule: accepted with 0.
    assert_eq!(w.event("alice", "review", json!({})), 0);
    assert_eq!(w.event("alice", "unknown_type", json!({})), 0);
    let s = w.summary("alice");
    assert_eq!(s["total_points"], 167);
    assert_eq!(s["lifetime_earned"], 167);
    assert_eq!(s["tier"], "Bronze");
    assert_eq!(
        s["tier_details"],
        json!({"name":"Bronze","min_points":0,"multiplier":1.0})
    );
    let awarded = w.host.webhooks_of("rewards.points_awarded");
    assert_eq!(awarded.len(), 5);
    assert_eq!(awarded[1]["points"], 25);
    assert_eq!(awarded[1]["total_points"], 125);
    // Webhooks go to the partner whose event it was.
    assert!(
        w.host
            .state
            .webhooks
            .iter()
            .any(|(p, t, _)| p == "other" && t == "rewards.points_awarded")
    );
    let entry = &w.host.state.ledger["alice"][1];
    assert_eq!(entry.partner.as_deref(), Some("shop"));
    assert_eq!(entry.event_type.as_deref(), Some("purchase"));
    assert_eq!(entry.reference.as_deref(), Some("ref-2"));
}

#[test]
fn tier_promotion_multiplier_and_claim() {
    let mut w = World::new();
    w.rule(json!({"event_type":"purchase","points":1,"unit_field":"amount"}));
    w.rule(json!({"event_type":"purchase","tier":"Gold","points":1,"unit_field":"amount","platform":"shop"}));
    let claims = |w: &mut World| {
        let config = &w.config;
        w.host
            .call(|h| Rewards::new(config, h).token_claims("alice"))
            .unwrap()
    };
    assert_eq!(
        claims(&mut w),
        vec![("mgpass:tier".to_string(), "\"Bronze\"".to_string())]
    );
    assert_eq!(w.event("alice", "purchase", json!({"amount": 999})), 999);
    assert!(w.host.webhooks_of("rewards.tier_promoted").is_empty());
    // The award that crosses the line is at the old multiplier, and promotes.
    assert_eq!(w.event("alice", "purchase", json!({"amount": 10})), 10);
    let promoted = w.host.webhooks_of("rewards.tier_promoted");
    assert_eq!(promoted.len(), 1);
    assert_eq!(
        (
            promoted[0]["previous_tier"].as_str(),
            promoted[0]["tier"].as_str()
        ),
        (Some("Bronze"), Some("Silver"))
    );
    assert_eq!(w.summary("alice")["tier"], "Silver");
    assert_eq!(claims(&mut w)[0].1, "\"Silver\"");
    // Silver ×1.5.
    assert_eq!(w.event("alice", "purchase", json!({"amount": 3})), 4);
    // Jump to Gold, then the Gold+platform rule applies at ×2.
    assert_eq!(w.event("alice", "purchase", json!({"amount": 3000})), 4500);
    assert_eq!(w.summary("alice")["tier"], "Gold");
    assert_eq!(w.event("alice", "purchase", json!({"amount": 10})), 20);
    // Spending does not lower the tier.
    w.grant("alice", -5000);
    let s = w.summary("alice");
    assert_eq!(
        (s["tier"].as_str(), s["lifetime_earned"].as_i64()),
        (Some("Gold"), Some(5533))
    );
}

#[test]
fn caps_and_frequency_per_user() {
    let mut w = World::new();
    w.rule(json!({"event_type":"checkin","points":10,"frequency":"daily"}));
    w.rule(json!({"event_type":"purchase","points":1,"unit_field":"amount","daily_cap":50,"monthly_cap":120}));
    assert_eq!(w.event("alice", "checkin", json!({})), 10);
    assert_eq!(w.event("alice", "checkin", json!({})), 0);
    assert_eq!(w.event("bob", "checkin", json!({})), 10);
    assert_eq!(w.event("alice", "purchase", json!({"amount": 40})), 40);
    assert_eq!(w.event("alice", "purchase", json!({"amount": 40})), 10);
    assert_eq!(w.event("alice", "purchase", json!({"amount": 40})), 0);
    w.host.now = ms_of(2024, 6, 4, 0, 0);
    assert_eq!(w.event("alice", "checkin", json!({})), 10);
    assert_eq!(w.event("alice", "purchase", json!({"amount": 60})), 50);
    w.host.now = ms_of(2024, 6, 5, 0, 0);
    assert_eq!(w.event("alice", "purchase", json!({"amount": 60})), 20);
    w.host.now = ms_of(2024, 7, 1, 0, 0);
    assert_eq!(w.event("alice", "purchase", json!({"amount": 60})), 50);
    assert_eq!(
        w.host.webhooks_of("rewards.points_awarded").last().unwrap()["capped"],
        true
    );
}

#[test]
fn refund_reverses_once_including_lifetime() {
    let mut w = World::new();
    w.rule(json!({"event_type":"purchase","points":1,"unit_field":"amount"}));
    assert_eq!(
        w.event(
            "alice",
            "purchase",
            json!({"reference_id":"order-1","amount":1200})
        ),
        1200
    );
    assert_eq!(w.summary("alice")["tier"], "Silver");
    let refund = json!({"reference_id":"refund-1","original_reference_id":"order-1"});
    assert_eq!(w.event("alice", "refund", refund), -1200);
    let s = w.summary("alice");
    assert_eq!(
        (s["total_points"].as_i64(), s["lifetime_earned"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(s["tier"], "Bronze");
    let last = w.host.state.ledger["alice"].last().unwrap().clone();
    assert_eq!((last.points, last.kind.as_str()), (-1200, "refund"));
    // Again, under another reference: nothing.
    assert_eq!(
        w.event(
            "alice",
            "refund",
            json!({"reference_id":"refund-2","original_reference_id":"order-1"})
        ),
        0
    );
    // Unknown, another partner's, another user's: nothing.
    assert_eq!(
        w.event("alice", "refund", json!({"original_reference_id":"nope"})),
        0
    );
    assert_eq!(
        w.event(
            "bob",
            "purchase",
            json!({"reference_id":"order-2","amount":100})
        ),
        100
    );
    assert_eq!(
        w.event_as(
            "other",
            1.0,
            "bob",
            "refund",
            json!({"original_reference_id":"order-2"})
        ),
        0
    );
    assert_eq!(
        w.event(
            "alice",
            "refund",
            json!({"original_reference_id":"order-2"})
        ),
        0
    );
    assert_eq!(w.event("alice", "refund", json!({})), 0);
    // Points already spent: the balance goes to zero, not below; lifetime loses it all.
    assert_eq!(
        w.event(
            "bob",
            "purchase",
            json!({"reference_id":"order-3","amount":300})
        ),
        300
    );
    w.grant("bob", -350);
    assert_eq!(
        w.event("bob", "refund", json!({"original_reference_id":"order-3"})),
        -50
    );
    let s = w.summary("bob");
    assert_eq!(
        (s["total_points"].as_i64(), s["lifetime_earned"].as_i64()),
        (Some(0), Some(100))
    );
    assert_eq!(w.host.webhooks_of("rewards.points_reversed").len(), 2);
}

#[test]
fn history_pages_newest_first() {
    let mut w = World::new();
    w.rule(json!({"event_type":"e","points":1,"unit_field":"n"}));
    for n in 1..=7 {
        w.event("alice", "e", json!({"n": n}));
    }
    let (status, page) = w.http(
        &user("alice"),
        "GET",
        "/api/account/rewards/history?limit=3",
        Value::Null,
    );
    assert_eq!(status, 200);
    let points = |p: &Value| {
        p["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["points"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(points(&page), vec![7, 6, 5]);
    let e = &page["entries"][0];
    assert_eq!(e["kind"], "earn");
    assert_eq!(e["balance_after"], 28);
    assert_eq!(e["partner"], "shop");
    assert_eq!(e["event_type"], "e");
    assert_eq!(e["reference"], "ref-7");
    assert_eq!(e["time"], "2024-06-03T09:00:00.000Z");
    assert!(e["id"].as_str().unwrap().starts_with("led_"));
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, page) = w.http(
        &user("alice"),
        "GET",
        &format!("/api/account/rewards/history?limit=3&cursor={cursor}"),
        Value::Null,
    );
    assert_eq!(points(&page), vec![4, 3, 2]);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, page) = w.http(
        &user("alice"),
        "GET",
        &format!("/api/account/rewards/history?limit=3&cursor={cursor}"),
        Value::Null,
    );
    assert_eq!(points(&page), vec![1]);
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = w.http(
        &user("alice"),
        "GET",
        "/api/account/rewards/history",
        Value::Null,
    );
    assert_eq!(points(&page).len(), 7);
    for bad in ["limit=0", "limit=101", "limit=x", "cursor=abc", "cursor=0"] {
        let (status, body) = w.http(
            &user("alice"),
            "GET",
            &format!("/api/account/rewards/history?{bad}"),
            Value::Null,
        );
        assert_eq!(status, 400, "{bad}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with(bad.split('=').next().unwrap())
        );
    }
    // Bob sees only his own.
    let (_, page) = w.http(
        &user("bob"),
        "GET",
        "/api/account/rewards/history",
        Value::Null,
    );
    assert_eq!(points(&page).len(), 0);
}

#[test]
fn admin_user_view_and_adjust() {
    let mut w = World::new();
    w.grant("alice", 500);
    let (status, body) = w.http(
        &admin(),
        "GET",
        "/api/rewards/users/alice?limit=1",
        Value::Null,
    );
    assert_eq!(status, 200);
    assert_eq!(body["user_id"], "alice");
    assert_eq!(body["total_points"], 500);
    assert_eq!(body["lifetime_earned"], 0); // adjustments are not earnings
    assert_eq!(body["tier"], "Bronze");
    assert_eq!(body["history"]["entries"][0]["kind"], "adjust");
    assert_eq!(body["history"]["entries"][0]["note"], "test");
    let (status, body) = w.http(
        &admin(),
        "POST",
        "/api/rewards/users/alice/adjust",
        json!({"points": -501, "reason": "x"}),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("insufficient_points"))
    );
    let (status, body) = w.http(
        &admin(),
        "POST",
        "/api/rewards/users/alice/adjust",
        json!({"points": -500, "reason": "x"}),
    );
    assert_eq!((status, body["total_points"].as_i64()), (200, Some(0)));
    for (bad, field) in [
        (json!({"points": 0, "reason": "x"}), "points:"),
        (json!({"points": 1.5, "reason": "x"}), "points:"),
        (json!({"points": 5}), "reason:"),
        (json!({"points": 5, "reason": "  "}), "reason:"),
        (json!({"points": 5, "reason": "x", "extra": 1}), "extra:"),
    ] {
        let (status, body) = w.http(&admin(), "POST", "/api/rewards/users/alice/adjust", bad);
        assert_eq!(status, 400);
        assert!(
            body["message"].as_str().unwrap().starts_with(field),
            "{body}"
        );
    }
    let (status, _) = w.http(
        &admin(),
        "POST",
        "/api/rewards/users/carol/adjust",
        json!({"points": 5, "reason": "x"}),
    );
    assert_eq!(status, 404);
    let (status, _) = w.http(&admin(), "GET", "/api/rewards/users/carol", Value::Null);
    assert_eq!(status, 404);
    let (status, _) = w.http(
        &user("alice"),
        "POST",
        "/api/rewards/users/alice/adjust",
        json!({"points": 5, "reason": "x"}),
    );
    assert_eq!(status, 403);
}

#[test]
fn redemption_success_and_its_writes() {
    let mut w = World::new();
    w.grant("alice", 1000);
    let (status, body) = w.redeem("alice", 400, None);
    assert_eq!(status, 201, "{body}");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 9, "exactly the published fields: {body}");
    assert!(body["redemption_id"].as_str().unwrap().starts_with("cb_"));
    assert_eq!(body["status"], "pending");
    assert_eq!(body["points"], 400);
    assert_eq!(body["tier"], "Bronze");
    assert_eq!(body["rate"], 0.01);
    assert_eq!(body["gross_amount"], 4.0);
    assert_eq!(body["fee_rate"], 0.05);
    assert_eq!(body["fee_amount"], 0.2);
    assert_eq!(body["net_amount"], 3.8);
    assert_eq!(w.host.balance_of("alice"), 600);
    let last = w.host.state.ledger["alice"].last().unwrap().clone();
    assert_eq!((last.kind.as_str(), last.points), ("redeem", -400));
    assert_eq!(last.reference.as_deref(), body["redemption_id"].as_str());
    let redeemed = w.host.webhooks_of("cashback.redeemed");
    assert_eq!(redeemed.len(), 1);
    assert_eq!(redeemed[0]["phone_number"], "+233241234567");
    assert_eq!(redeemed[0]["network"], "mtn");
    assert_eq!(
        w.host.webhooks_of("rewards.redeemed")[0]["total_points"],
        600
    );
    assert!(w.host.state.webhooks.iter().all(|(p, _, _)| p == "payout"));
}

#[test]
fn redemption_checks_change_nothing() {
    let mut w = World::new();
    w.grant("alice", 100_000);
    w.grant("bob", 200);
    let before = w.host.state.clone();
    let cases = [
        (
            json!({"points": 249, "phone_number": "0241234567", "network": "mtn"}),
            400,
            "invalid_request",
            "points:",
        ),
        (
            json!({"points": 300, "phone_number": "12345", "network": "mtn"}),
            400,
            "invalid_request",
            "phone_number:",
        ),
        (
            json!({"points": 300, "phone_number": "0241234567", "network": "glo"}),
            400,
            "invalid_request",
            "network:",
        ),
        (
            json!({"points": 300, "phone_number": "0241234567"}),
            400,
            "invalid_request",
            "network:",
        ),
        (
            json!({"points": "300", "phone_number": "0241234567", "network": "mtn"}),
            400,
            "invalid_request",
            "points:",
        ),
    ];
    for (body, status, error, field) in cases {
        let (got, reply) = w.http(&user("alice"), "POST", "/api/account/cashback/redeem", body);
        assert_eq!(
            (got, reply["error"].as_str()),
            (status, Some(error)),
            "{reply}"
        );
        assert!(
            reply["message"].as_str().unwrap().starts_with(field),
            "{reply}"
        );
    }
    let (status, reply) = w.redeem("bob", 300, None);
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("insufficient_points"))
    );
    assert_eq!(w.host.state, before);

    // Daily amount: 500 GHS = 50,000 points at Bronze.
    let (status, reply) = w.redeem("alice", 50_001, None);
    assert_eq!(
        (status, reply["error"].as_str()),
        (429, Some("fraud_check_failed"))
    );
    assert_eq!(w.host.state, before);
    assert_eq!(w.redeem("alice", 300, None).0, 201);
    let after_first = w.host.state.clone();
    // 60 minutes apart.
    w.host.now += 59 * 60_000;
    let (status, reply) = w.redeem("alice", 300, None);
    assert_eq!(
        (status, reply["error"].as_str()),
        (429, Some("fraud_check_failed")),
        "{reply}"
    );
    assert_eq!(w.host.state, after_first);
    w.host.now += 60_000;
    assert_eq!(w.redeem("alice", 300, None).0, 201);
    w.host.now += 3_600_000;
    assert_eq!(w.redeem("alice", 300, None).0, 201);
    // A fourth the same day.
    w.host.now += 3_600_000;
    let (status, reply) = w.redeem("alice", 300, None);
    assert_eq!(status, 429);
    assert!(reply["message"].as_str().unwrap().contains("3 redemptions"));
    // The next UTC day.
    w.host.now = ms_of(2024, 6, 4, 0, 0);
    assert_eq!(w.redeem("alice", 300, None).0, 201);
    assert_eq!(w.host.balance_of("alice"), 100_000 - 4 * 300);
}

#[test]
fn idempotency_key_replays_the_first_result() {
    let mut w = World::new();
    w.grant("alice", 1000);
    let (status, first) = w.redeem("alice", 300, Some("k-1"));
    assert_eq!(status, 201);
    let (status, again) = w.redeem("alice", 300, Some("k-1"));
    assert_eq!((status, &again), (201, &first));
    assert_eq!(w.host.balance_of("alice"), 700);
    let (status, conflict) = w.redeem("alice", 400, Some("k-1"));
    assert_eq!(
        (status, conflict["error"].as_str()),
        (409, Some("idempotency_conflict"))
    );
    // Another user's same key is theirs alone.
    w.grant("bob", 1000);
    assert_eq!(w.redeem("bob", 300, Some("k-1")).0, 201);
    // A failed attempt is not remembered: the retry is evaluated again.
    w.host.now += 3_600_000;
    let (status, _) = w.redeem("alice", 800, Some("k-2"));
    assert_eq!(status, 400);
    w.grant("alice", 100);
    assert_eq!(w.redeem("alice", 800, Some("k-2")).0, 201);
    assert_eq!(w.host.balance_of("alice"), 0);
}

#[test]
fn concurrent_style_redemptions_never_overdraw() {
    // The host serializes conflicting calls (reruns); in sequence, 20 attempts on a
    // balance worth 3 must leave it at zero or above with each success recorded once.
    let mut w = World::new();
    w.config.limits.min_minutes_between = 0;
    w.config.limits.max_redemptions_per_day = 100;
    w.grant("alice", 1000);
    let mut accepted = Vec::new();
    for _ in 0..20 {
        let (status, body) = w.redeem("alice", 300, None);
        if status == 201 {
            accepted.push(body["redemption_id"].as_str().unwrap().to_string());
        } else {
            assert_eq!(body["error"], "insufficient_points");
        }
    }
    assert_eq!(accepted.len(), 3);
    let mut unique = accepted.clone();
    unique.dedup();
    assert_eq!(unique.len(), 3);
    assert_eq!(w.host.balance_of("alice"), 100);
    let debits = w.host.state.ledger["alice"]
        .iter()
        .filter(|e| e.kind.as_str() == "redeem")
        .count();
    assert_eq!(debits, 3);
}

#[test]
fn payout_callback_transitions_and_refunds() {
    let mut w = World::new();
    w.grant("alice", 2000);
    let (_, r1) = w.redeem("alice", 500, None);
    w.host.now += 3_600_000;
    let (_, r2) = w.redeem("alice", 500, None);
    let (id1, id2) = (r1["redemption_id"].clone(), r2["redemption_id"].clone());
    assert_eq!(w.host.balance_of("alice"), 1000);

    // Unsigned, badly signed, or a signature over another body: 401, nothing changes.
    let before = w.host.state.clone();
    let body = json!({"cashback_ID": id1, "status": "completed"});
    let (status, _) = w.send(
        &public(),
        request("POST", "/api/cashback/callback", &body.to_string()),
    );
    assert_eq!(status, 401);
    let (status, reply) = w.callback(body.clone(), Some("00".repeat(32)));
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("invalid_signature"))
    );
    let other = signature::sign(SECRET.as_bytes(), b"{}");
    assert_eq!(w.callback(body.clone(), Some(other)).0, 401);
    assert_eq!(w.host.state, before);

    assert_eq!(
        w.callback(json!({"cashback_ID": id1, "status": "processing"}), None)
            .0,
        200
    );
    let (status, done) = w.callback(json!({"cashback_ID": id1, "status": "completed"}), None);
    assert_eq!((status, done["status"].as_str()), (200, Some("completed")));
    // A retried callback is answered again without change; an illegal one is 409.
    assert_eq!(
        w.callback(json!({"cashback_ID": id1, "status": "completed"}), None)
            .0,
        200
    );
    let (status, reply) = w.callback(json!({"cashback_ID": id1, "status": "failed"}), None);
    assert_eq!(
        (status, reply["error"].as_str()),
        (409, Some("invalid_transition"))
    );
    assert_eq!(w.host.balance_of("alice"), 1000);

    // Failure refunds the points in the same call, once.
    let (status, failed) = w.callback(
        json!({"cashback_ID": id2, "status": "failed", "reason": "wallet closed"}),
        None,
    );
    assert_eq!(
        (status, failed["status"].as_str(), failed["reason"].as_str()),
        (200, Some("failed"), Some("wallet closed"))
    );
    assert_eq!(w.host.balance_of("alice"), 1500);
    let refund = w.host.state.ledger["alice"].last().unwrap().clone();
    assert_eq!((refund.kind.as_str(), refund.points), ("refund", 500));
    assert_eq!(
        w.callback(json!({"cashback_ID": id2, "status": "failed"}), None)
            .0,
        200
    );
    assert_eq!(
        w.callback(json!({"cashback_ID": id2, "status": "cancelled"}), None)
            .0,
        409
    );
    assert_eq!(w.host.balance_of("alice"), 1500);
    let processed = w.host.webhooks_of("cashback.processed");
    assert_eq!(processed.len(), 3);
    assert_eq!(processed[2]["refunded_points"], 500);

    let (status, _) = w.callback(
        json!({"cashback_ID": "cb_nope", "status": "completed"}),
        None,
    );
    assert_eq!(status, 404);
    let (status, reply) = w.callback(json!({"cashback_ID": id1, "status": "pending"}), None);
    assert_eq!(
        (
            status,
            reply["message"].as_str().unwrap().starts_with("status:")
        ),
        (400, true)
    );

    // Without a configured secret every callback is refused.
    w.config.callback_secret = None;
    assert_eq!(
        w.callback(json!({"cashback_ID": id1, "status": "completed"}), None)
            .0,
        401
    );
}

#[test]
fn long_references_and_ids_make_safe_keys() {
    let mut w = World::new();
    w.rule(json!({"event_type":"purchase","points":5}));
    let long = "r/".repeat(400);
    assert_eq!(
        w.event("alice", "purchase", json!({"reference_id": long})),
        5
    );
    assert_eq!(
        w.event("alice", "refund", json!({"original_reference_id": long})),
        -5
    );
    let (status, _) = w.http(
        &admin(),
        "GET",
        &format!("/api/rewards/rules/{}", "x".repeat(600)),
        Value::Null,
    );
    assert_eq!(status, 404);
}
