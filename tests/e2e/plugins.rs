//! The example plugins change real tokens and logins, through the real server.

use crate::support::*;
use base64::Engine;
use serde_json::Value;

fn table(pairs: &[(&str, &str)]) -> toml::Table {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), toml::Value::String(v.to_string())))
        .collect()
}

fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

#[tokio::test]
async fn example_plugins_add_a_claim_and_gate_a_login() {
    let server = TestServer::start_with(|c| {
        c.plugins
            .insert("example-claims".into(), table(&[("greeting", "Welcome")]));
        c.plugins.insert(
            "example-role-gate".into(),
            table(&[
                ("client_id", "gated"),
                ("role", "staff"),
                ("message", "Staff only here."),
            ]),
        );
    })
    .await;
    let listed = server
        .admin(mgpass::admin::Command::PluginList)
        .await
        .unwrap();
    let loaded: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "loaded")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        loaded.contains(&"example-claims") && loaded.contains(&"example-role-gate"),
        "{listed}"
    );

    let gated = ClientSpec::confidential("gated");
    let secret = server.add_client(gated.clone()).await;
    server.add_user("ann", "ann-password-1", &[]).await;
    server.add_user("sam", "sam-password-1", &["staff"]).await;

    // Without the role: the login page says why, and no code is issued.
    let (url, _) = auth_request(&server, &gated, "openid", &[]);
    let resp = submit_login(
        &server.browser(),
        &server,
        &url,
        "ann",
        "ann-password-1",
        false,
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("location").is_none());
    assert!(resp.text().await.unwrap().contains("Staff only here."));

    // With the role: tokens carry the plugin's claim next to the registered ones.
    let tokens = code_flow(
        &server,
        &server.browser(),
        &gated,
        secret.as_deref(),
        "openid",
        Some(("sam", "sam-password-1")),
    )
    .await;
    let claims = payload(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["example:greeting"], "Welcome, sam!");
    assert_eq!(
        claims["iss"],
        server.base.as_str(),
        "registered claims untouched"
    );

    // Other clients are not gated.
    let open = ClientSpec::confidential("open");
    let secret = server.add_client(open.clone()).await;
    let tokens = code_flow(
        &server,
        &server.browser(),
        &open,
        secret.as_deref(),
        "openid",
        Some(("ann", "ann-password-1")),
    )
    .await;
    assert_eq!(
        payload(tokens["access_token"].as_str().unwrap())["example:greeting"],
        "Welcome, ann!"
    );
}

#[tokio::test]
async fn examples_stay_off_without_their_config() {
    let server = TestServer::start().await;
    let spec = ClientSpec::confidential("plain");
    let secret = server.add_client(spec.clone()).await;
    server.add_user("pat", "pat-password-1", &[]).await;
    let tokens = code_flow(
        &server,
        &server.browser(),
        &spec,
        secret.as_deref(),
        "openid",
        Some(("pat", "pat-password-1")),
    )
    .await;
    let claims = payload(tokens["access_token"].as_str().unwrap());
    assert!(claims.get("example:greeting").is_none(), "{claims}");
}
