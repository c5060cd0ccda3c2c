//! Partner API: partners and keys (CLI and admin API), rotation, rate limits.

use crate::support::*;
use mgpass::admin::Command;
use serde_json::{Value, json};

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
