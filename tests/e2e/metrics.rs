//! Operators' view: Prometheus metrics on a separate loopback listener.

use crate::support::*;

#[tokio::test]
async fn metrics_listener_reports_requests_logins_and_tokens() {
    let server =
        TestServer::start_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let spec = ClientSpec::confidential("metrics");
    let secret = server.add_client(spec.clone()).await;
    server.add_user("mia", "metrics-pass-1", &[]).await;
    let browser = server.browser();
    code_flow(
        &server,
        &browser,
        &spec,
        secret.as_deref(),
        "openid",
        Some(("mia", "metrics-pass-1")),
    )
    .await;
    server
        .http()
        .get(server.url("/jwks.json"))
        .send()
        .await
        .unwrap();
    let addr = server.metrics_addr().expect("metrics enabled");
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("mgpass_logins_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mgpass_tokens_issued_total{grant=\"authorization_code\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mgpass_request_duration_seconds_count{route=\"jwks\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mgpass_outbox_depth{kind=\"backchannel_logout\"} 0"),
        "{text}"
    );
    assert!(text.contains("mgpass_store_size_bytes"), "{text}");
    // The built-in rewards plugin added its claim to the token: its call is counted.
    assert!(
        text.contains(
            "mgpass_plugin_call_duration_seconds_count{plugin=\"rewards\",hook=\"token-claims\",result=\"ok\"} 1"
        ),
        "{text}"
    );
    let off = TestServer::start().await;
    assert!(off.metrics_addr().is_none(), "off by default");
}

#[test]
fn metrics_listener_must_be_loopback() {
    let e = mgpass::config::Config::parse(
        "metrics_listen = \"0.0.0.0:9090\"",
        std::path::Path::new("."),
    )
    .unwrap_err();
    assert!(e.contains("metrics_listen"), "{e}");
}
