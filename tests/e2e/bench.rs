//! The load tool, in-process against a test server: setup through the admin socket, a
//! short run, no errors.

use crate::support::TestServer;
use mgpass::bench::{self, Connections, Limit, Options, Scenario, Trust};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_discovery_and_sso_code_without_errors() {
    let server = TestServer::start().await;
    let options = Options {
        url: server.base.clone(),
        admin_socket: server.config.admin_socket_path(),
        trust: Trust::Ca(server.cert_path.clone()),
        scenarios: vec![Scenario::Discovery, Scenario::SsoCode],
        concurrency: 2,
        limit: Limit::Duration(Duration::from_secs(1)),
        connections: Connections::KeepAlive,
        http1: false,
        progress: false,
    };
    let reports = bench::run(&options).await.expect("bench runs");
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert_eq!(r.setup_error, None, "{}", r.scenario);
        assert_eq!(r.errors, 0, "{}: {:?}", r.scenario, r.error_kinds);
        assert!(r.requests > 0, "{}", r.scenario);
        assert!(r.p99_ms.is_some(), "{}", r.scenario);
    }
    // The run cleaned up after itself: no bench client is left.
    let clients = server
        .admin(mgpass::admin::Command::ClientList)
        .await
        .expect("list");
    assert_eq!(clients.as_array().map(Vec::len), Some(0), "{clients}");
}

#[tokio::test]
async fn bench_without_a_server_says_so() {
    let dir = tempfile::tempdir().expect("dir");
    let options = Options {
        url: "https://localhost:1".into(),
        admin_socket: dir.path().join("admin.sock"),
        trust: Trust::Insecure,
        scenarios: vec![Scenario::Discovery],
        concurrency: 1,
        limit: Limit::Requests(1),
        connections: Connections::New,
        http1: false,
        progress: false,
    };
    let err = bench::run(&options).await.expect_err("no server");
    assert!(err.contains("is the server running"), "{err}");
}
