//! Plugin host tests against a real store and real compiled guests (`plugins/tests/*`).

use super::testdata::*;
use super::*;
use crate::clock::{Clock, ManualClock, SystemClock};
use crate::store::{OutboxKind, User};
use crate::types::UserId;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One compile cache for the whole test binary: each guest compiles once, later hosts
/// load it from disk.
fn shared_cache() -> PathBuf {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    CACHE
        .get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
        .to_path_buf()
}

struct Env {
    dir: tempfile::TempDir,
    config: Config,
    store: Store,
    host: PluginHost,
}

/// Generous budgets: tests run in parallel on few cores, and a wall-clock budget of
/// 50 ms measures the machine's load as much as the plugin. The tests about budgets
/// set theirs.
fn options() -> HostOptions {
    HostOptions {
        cache_dir: Some(shared_cache()),
        default_time_budget: Duration::from_secs(2),
        queue_wait: Duration::from_secs(10),
        ..HostOptions::default()
    }
}

/// These tests load only the plugins they name: the built-in rewards plugin stays off.
fn without_rewards(mut config: Config) -> Config {
    config.plugins.entry("rewards".into()).or_insert_with(|| {
        toml::Table::from_iter([("enabled".to_string(), toml::Value::Boolean(false))])
    });
    config
}

fn env(files: &[(&str, &[u8])], config_toml: &str) -> Env {
    env_with(files, config_toml, ManualClock::new(), options())
}

fn env_with(
    files: &[(&str, &[u8])],
    config_toml: &str,
    clock: SharedClock,
    options: HostOptions,
) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = without_rewards(Config::parse(config_toml, dir.path()).expect("config"));
    std::fs::create_dir_all(&config.plugins_dir).expect("plugins dir");
    for (name, bytes) in files {
        std::fs::write(config.plugins_dir.join(format!("{name}.wasm")), bytes)
            .expect("write plugin");
    }
    let store = Store::open(&dir.path().join("db")).expect("store");
    let host = PluginHost::load_with(&config, store.clone(), clock, options).expect("host");
    Env {
        dir,
        config,
        store,
        host,
    }
}

fn add_user(store: &Store, name: &str, roles: &[&str]) -> User {
    let user = User {
        id: UserId::generate(),
        username: name.into(),
        email: Some(format!("{name}@example.test")),
        name: None,
        roles: roles.iter().map(|r| r.to_string()).collect(),
        password_hash: "$argon2id$never-shown".into(),
        created_at: 0,
        updated_at: 0,
    };
    store.insert_user(&user).expect("insert user");
    user
}

fn admin() -> Principal {
    Principal {
        kind: PrincipalKind::Admin,
        subject: "usr_admin".into(),
        scopes: vec!["mgpass:admin".into()],
        partner_id: None,
    }
}

fn request(method: &str, path: &str, body: &str) -> Request {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    Request {
        method: method.into(),
        path: path.into(),
        path_params: Vec::new(),
        query: query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

/// Routes and calls a request as the HTTP layer would; returns (status, JSON body).
async fn send(
    host: &PluginHost,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, serde_json::Value), PluginError> {
    let bare = path.split('?').next().unwrap_or(path);
    let route = host
        .find_route(method, bare)
        .unwrap_or_else(|| panic!("no route for {method} {bare}"));
    let response = host
        .handle_request(&route, admin(), request(method, path, body))
        .await?;
    Ok((
        response.status,
        serde_json::from_str(&response.body).expect("JSON body"),
    ))
}

fn status_of(host: &PluginHost, name: &str) -> PluginState {
    host.list()
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.state)
        .unwrap_or_else(|| panic!("plugin {name} not listed"))
}

fn failure(result: Result<impl std::fmt::Debug, PluginError>) -> CallFailure {
    match result {
        Err(PluginError::Call { cause, id, .. }) => {
            assert!(id.starts_with("perr_"), "{id}");
            cause
        }
        other => panic!("expected a failed call, got {other:?}"),
    }
}

fn event(user: &User, reference: &str, amount: f64) -> PartnerEvent {
    PartnerEvent {
        event_id: format!("evt_{reference}"),
        user_id: user.id.to_string(),
        event_type: "purchase".into(),
        metadata: serde_json::json!({ "amount": amount }).to_string(),
        reference_id: reference.into(),
    }
}

fn partner() -> Partner {
    Partner {
        id: "ptn_shop".into(),
        name: "Shop".into(),
        multiplier: 1.5,
    }
}

#[tokio::test]
async fn fixture_uses_every_capability_and_commits() {
    let e = env(&[("fx", FIXTURE)], "[plugins.fx]\nversion = \"v7\"\n");
    let alice = add_user(&e.store, "alice", &["reader"]);
    let id = alice.id.to_string();

    assert_eq!(
        status_of(&e.host, "fx"),
        PluginState::Loaded {
            hooks: vec![
                "on-partner-event",
                "handle-request",
                "token-claims",
                "authorize-login"
            ],
            routes: 12,
            paused_for_ms: None,
        }
    );
    let route = e
        .host
        .find_route("post", &format!("/api/fixture/credit/{id}"))
        .expect("route");
    assert_eq!(route.params, vec![("user".to_string(), id.clone())]);
    assert_eq!(route.principal, PrincipalKind::Admin);
    assert!(e.host.find_route("GET", "/api/fixture/credit/x").is_none());
    assert!(e.host.find_route("GET", "/api/elsewhere").is_none());

    let (status, body) = send(&e.host, "GET", "/api/fixture/version", "")
        .await
        .expect("version");
    assert_eq!((status, body["version"].as_str()), (200, Some("v7")));

    // Key-value: own writes are visible to own reads, and committed on success.
    let (_, body) = send(&e.host, "PUT", "/api/fixture/kv/color", "blue")
        .await
        .expect("put");
    assert_eq!(body["readback"], "blue");
    assert_eq!(
        e.store
            .plugin_kv_get("fx", "color")
            .expect("get")
            .as_deref(),
        Some("blue")
    );
    send(&e.host, "PUT", "/api/fixture/kv/colour", "red")
        .await
        .expect("put");
    let (_, body) = send(&e.host, "GET", "/api/fixture/scan?prefix=col", "")
        .await
        .expect("scan");
    assert_eq!(
        body,
        serde_json::json!([["color", "blue"], ["colour", "red"]])
    );
    let (_, body) = send(&e.host, "DELETE", "/api/fixture/kv/color", "")
        .await
        .expect("delete");
    assert_eq!(body["readback"], serde_json::Value::Null);
    assert_eq!(e.store.plugin_kv_get("fx", "color").expect("get"), None);
    // Another plugin's space is separate.
    assert_eq!(e.store.plugin_kv_get("other", "colour").expect("get"), None);

    // Ledger: credits, a refused overdraft, history newest first with a cursor.
    for points in [10, 20, 30, 40] {
        let (status, _) = send(
            &e.host,
            "POST",
            &format!("/api/fixture/credit/{id}"),
            &points.to_string(),
        )
        .await
        .expect("credit");
        assert_eq!(status, 200);
    }
    let (status, body) = send(&e.host, "POST", &format!("/api/fixture/debit/{id}"), "101")
        .await
        .expect("debit");
    assert_eq!((status, body["balance"].as_i64()), (409, Some(100)));
    let (status, body) = send(&e.host, "POST", &format!("/api/fixture/debit/{id}"), "25")
        .await
        .expect("debit");
    assert_eq!((status, body["balance_after"].as_i64()), (200, Some(75)));
    let (_, page) = send(&e.host, "GET", &format!("/api/fixture/ledger/{id}"), "")
        .await
        .expect("history");
    assert_eq!(page["balance"], 75);
    let seqs: Vec<i64> = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["seq"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(seqs, vec![5, 4, 3]);
    let cursor = page["next"].as_u64().expect("cursor");
    let (_, page) = send(
        &e.host,
        "GET",
        &format!("/api/fixture/ledger/{id}?cursor={cursor}"),
        "",
    )
    .await
    .expect("page 2");
    let points: Vec<i64> = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["points"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(points, vec![20, 10]);
    assert_eq!(page["next"], serde_json::Value::Null);
    let stored = e.store.ledger_entries(&id, None, 100).expect("entries");
    assert_eq!(stored.len(), 5);
    assert_eq!(stored.iter().map(|e| e.points).sum::<i64>(), 75);
    assert_eq!(e.store.ledger_balance(&id).expect("balance").points, 75);
    let (status, _) = send(&e.host, "POST", "/api/fixture/credit/usr_nobody", "5")
        .await
        .expect("credit");
    assert_eq!(status, 400);

    // User lookup never carries the password digest.
    let (_, body) = send(&e.host, "GET", &format!("/api/fixture/user/{id}"), "")
        .await
        .expect("user");
    assert_eq!(body["username"], "alice");
    assert_eq!(body["roles"], serde_json::json!(["reader"]));
    assert!(!body.to_string().contains("argon2"));

    // A partner event: ledger write and webhook in one commit.
    let outcome = e
        .host
        .on_partner_event(event(&alice, "ref-1", 10.0), partner(), None)
        .await
        .expect("event");
    assert_eq!(outcome.points_awarded, 15);
    assert_eq!(e.store.ledger_balance(&id).expect("balance").points, 90);
    let webhooks: Vec<_> = e
        .store
        .outbox_pending()
        .expect("outbox")
        .into_iter()
        .map(|i| i.kind)
        .collect();
    assert_eq!(
        webhooks,
        vec![OutboxKind::Webhook {
            partner_id: "ptn_shop".into(),
            event_type: "rewards.points_awarded".into(),
            payload: serde_json::json!({"user_id": id, "points": 15}),
        }]
    );

    let claims = e
        .host
        .token_claims(
            &alice,
            &ClientId::parse("app").expect("client"),
            &Scopes::parse("openid").expect("scopes"),
        )
        .await
        .expect("claims");
    assert_eq!(
        claims,
        vec![("fixture:version".to_string(), serde_json::json!("v7"))]
    );
}

#[tokio::test]
async fn a_failed_or_trapped_call_applies_nothing() {
    let e = env(&[("crash", TRAP_AFTER_WRITE)], "");
    let bob = add_user(&e.store, "bob", &[]);
    let recorder: EventRecorder = Arc::new(|tx, _| tx.put("test/recorded", &true));
    let result = e
        .host
        .on_partner_event(event(&bob, "r", 1.0), partner(), Some(recorder))
        .await;
    assert!(matches!(failure(result), CallFailure::Trap(m) if m.contains("panic")));
    assert_eq!(e.store.plugin_kv_get("crash", "written").expect("kv"), None);
    assert_eq!(
        e.store
            .ledger_balance(&bob.id.to_string())
            .expect("balance")
            .points,
        0
    );
    assert!(
        e.store
            .ledger_entries(&bob.id.to_string(), None, 10)
            .expect("entries")
            .is_empty()
    );
    assert!(e.store.outbox_pending().expect("outbox").is_empty());
    assert_eq!(e.store.get::<bool>("test/recorded").expect("get"), None);

    // An error result is refused the same way.
    let e = env(&[("fx", FIXTURE)], "");
    let result = send(&e.host, "POST", "/api/fixture/fail", "").await;
    let failure = failure(result);
    assert_eq!(
        failure,
        CallFailure::Returned("refusing after a write".into())
    );
    assert_eq!(e.store.plugin_kv_get("fx", "fail").expect("kv"), None);

    // With no event plugin, the caller's record still commits (and nothing is awarded).
    let e = env(&[], "");
    let recorder: EventRecorder =
        Arc::new(|tx, outcome| tx.put("test/recorded", &outcome.points_awarded));
    let outcome = e
        .host
        .on_partner_event(event(&bob, "r", 1.0), partner(), Some(recorder))
        .await
        .expect("event");
    assert_eq!(outcome.points_awarded, 0);
    assert_eq!(e.store.get::<i64>("test/recorded").expect("get"), Some(0));
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_within_its_budget_and_others_keep_working() {
    let e = env(
        &[("spin", INFINITE_LOOP), ("fx", FIXTURE)],
        // Fuel so large that only the wall-clock deadline can stop the host-call loop.
        "[plugins.spin]\ntime_budget_ms = 100\n",
    );
    let carol = add_user(&e.store, "carol", &[]);
    let started = Instant::now();
    let result = send(&e.host, "GET", "/api/spin", "").await;
    let cause = failure(result);
    assert!(
        matches!(cause, CallFailure::OutOfFuel | CallFailure::Timeout(100)),
        "{cause:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let e2 = env(
        &[("spin", INFINITE_LOOP)],
        "[plugins.spin]\ntime_budget_ms = 100\nfuel = 1000000000000\n",
    );
    let started = Instant::now();
    let result = e2
        .host
        .token_claims(
            &carol,
            &ClientId::parse("app").expect("client"),
            &Scopes::default(),
        )
        .await;
    let elapsed = started.elapsed();
    let err = result.expect_err("must time out");
    assert_eq!(err.http_status(), 503);
    assert!(
        matches!(
            &err,
            PluginError::Call {
                cause: CallFailure::Timeout(100),
                ..
            }
        ),
        "{err}"
    );
    assert!(
        elapsed >= Duration::from_millis(100) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );

    // The server keeps serving: other plugins and the same one answer.
    let (status, _) = send(&e.host, "GET", "/api/fixture/version", "")
        .await
        .expect("fixture");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_huge_allocation_is_refused_at_the_memory_cap() {
    let e = env(&[("hog", BIG_ALLOC)], "");
    let dave = add_user(&e.store, "dave", &[]);
    let result = e
        .host
        .token_claims(
            &dave,
            &ClientId::parse("app").expect("client"),
            &Scopes::default(),
        )
        .await;
    assert_eq!(failure(result), CallFailure::MemoryLimit(32));

    let e = env(&[("hog", BIG_ALLOC)], "[plugins.hog]\nmemory_mib = 8\n");
    let result = e
        .host
        .token_claims(
            &dave,
            &ClientId::parse("app").expect("client"),
            &Scopes::default(),
        )
        .await;
    assert_eq!(failure(result), CallFailure::MemoryLimit(8));
}

#[tokio::test]
async fn plugins_importing_anything_else_or_another_version_are_refused_at_load() {
    let e = env(
        &[
            ("snoop", WASI_IMPORT),
            ("future", WRONG_VERSION),
            ("fx", FIXTURE),
        ],
        "",
    );
    let PluginState::Failed(why) = status_of(&e.host, "snoop") else {
        panic!("snoop loaded");
    };
    assert!(why.contains("wasi:filesystem/preopens@0.2.0"), "{why}");
    let PluginState::Failed(why) = status_of(&e.host, "future") else {
        panic!("future loaded");
    };
    assert!(
        why.contains("mgpass:plugin@0.2.0") && why.contains("mgpass:plugin@0.1.0"),
        "{why}"
    );
    // The others still load.
    assert!(matches!(
        status_of(&e.host, "fx"),
        PluginState::Loaded { .. }
    ));
}

#[tokio::test]
async fn claims_must_be_namespaced_and_never_registered() {
    let eve = |e: &Env| add_user(&e.store, "eve", &[]);
    let client = ClientId::parse("app").expect("client");
    for (config, needle) in [
        ("", "\"sub\""),
        ("[plugins.impostor]\nclaim = \"tier\"\n", "namespaced"),
    ] {
        let e = env(&[("impostor", CLAIMS_OVERRIDE_SUB)], config);
        let result = e
            .host
            .token_claims(&eve(&e), &client, &Scopes::default())
            .await;
        let cause = failure(result);
        assert!(
            matches!(&cause, CallFailure::InvalidOutput(m) if m.contains(needle)),
            "{cause:?}"
        );
    }
}

#[tokio::test]
async fn example_plugins_add_a_claim_and_gate_logins() {
    let e = env(
        &[],
        "[plugins.example-claims]\ngreeting = \"Welcome\"\n\
         [plugins.example-role-gate]\nclient_id = \"console\"\nrole = \"staff\"\nmessage = \"Staff only.\"\n",
    );
    let staff = add_user(&e.store, "sam", &["staff"]);
    let guest = add_user(&e.store, "gus", &[]);
    let console = ClientId::parse("console").expect("client");
    let shop = ClientId::parse("shop").expect("client");

    let claims = e
        .host
        .token_claims(&guest, &shop, &Scopes::default())
        .await
        .expect("claims");
    assert_eq!(
        claims,
        vec![(
            "example:greeting".to_string(),
            serde_json::json!("Welcome, gus!")
        )]
    );
    assert!(matches!(
        e.host.authorize_login(&staff, &console).await,
        Ok(LoginDecision::Allow)
    ));
    assert!(matches!(
        e.host.authorize_login(&guest, &shop).await,
        Ok(LoginDecision::Allow)
    ));
    match e.host.authorize_login(&guest, &console).await {
        Ok(LoginDecision::Deny(message)) => assert_eq!(message, "Staff only."),
        other => panic!("expected a denial, got {other:?}"),
    }

    // Without their config sections the examples stay off.
    let e = env(&[], "");
    assert_eq!(status_of(&e.host, "example-claims"), PluginState::Disabled);
    assert!(
        e.host
            .token_claims(&guest, &shop, &Scopes::default())
            .await
            .expect("claims")
            .is_empty()
    );
}

/// Runs `calls` (path, points) concurrently; returns how many got each status.
async fn concurrently(host: &PluginHost, calls: Vec<(String, i64)>) -> Vec<(bool, u16)> {
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|(path, points)| {
            let host = host.clone();
            tokio::spawn(async move {
                let result = send(&host, "POST", &path, &points.to_string()).await;
                (path.contains("credit"), result.expect("no call may fail").0)
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("join"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_debits_never_overdraw_and_lose_no_credit() {
    // A generous wall-clock budget: 50 calls contend for two cores, and this test is
    // about correctness under concurrency, not time limits.
    let e = env(&[("fx", FIXTURE)], "[plugins.fx]\ntime_budget_ms = 5000\n");
    let user = add_user(&e.store, "frank", &[]);
    let id = user.id.to_string();
    let (credit, debit) = (
        format!("/api/fixture/credit/{id}"),
        format!("/api/fixture/debit/{id}"),
    );
    send(&e.host, "POST", &credit, "30").await.expect("seed");

    // 50 debits of 1 against 30 points: exactly 30 succeed (more would be an
    // overdraft or a lost update), the rest are refused.
    let results = concurrently(&e.host, (0..50).map(|_| (debit.clone(), 1)).collect()).await;
    let ok = results.iter().filter(|(_, s)| *s == 200).count();
    assert_eq!(ok, 30, "{results:?}");
    assert!(results.iter().all(|(_, s)| *s == 200 || *s == 409));
    assert_eq!(e.store.ledger_balance(&id).expect("balance").points, 0);

    // Credits racing debits: every credit lands, no debit overdraws.
    let mixed = (0..50)
        .map(|i| {
            if i % 2 == 0 {
                (credit.clone(), 2)
            } else {
                (debit.clone(), 1)
            }
        })
        .collect();
    let results = concurrently(&e.host, mixed).await;
    let credited = results.iter().filter(|(c, s)| *c && *s == 200).count() as i64;
    let debited = results.iter().filter(|(c, s)| !*c && *s == 200).count() as i64;
    assert_eq!(credited, 25);
    let balance = e.store.ledger_balance(&id).expect("balance");
    assert_eq!(balance.points, 2 * credited - debited);

    let entries = e.store.ledger_entries(&id, None, 1000).expect("entries");
    assert_eq!(entries.len() as u64, balance.seq);
    assert_eq!(
        entries.iter().map(|e| e.points).sum::<i64>(),
        balance.points
    );
    for pair in entries.windows(2) {
        assert_eq!(pair[0].seq, pair[1].seq + 1);
        assert_eq!(
            pair[0].balance_after,
            pair[1].balance_after + pair[0].points
        );
        assert!(pair[0].balance_after >= 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_swaps_behaviour_without_dropping_in_flight_calls() {
    let toml = |v: &str| format!("[plugins.fx]\nversion = \"{v}\"\ntime_budget_ms = 5000\n");
    let e = env_with(
        &[("fx", FIXTURE)],
        &toml("v1"),
        Arc::new(SystemClock),
        options(),
    );
    let host = e.host.clone();
    let in_flight =
        tokio::spawn(async move { send(&host, "GET", "/api/fixture/slow?ms=400", "").await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut config = without_rewards(Config::parse(&toml("v2"), e.dir.path()).expect("config"));
    config.plugins_dir = e.config.plugins_dir.clone();
    std::fs::write(config.plugins_dir.join("broken.wasm"), b"not wasm").expect("write");
    let listed = e.host.reload(&config).await.expect("reload");
    assert!(listed.iter().any(|s| s.name == "broken"
        && matches!(&s.state, PluginState::Failed(m) if m.contains("not a valid component"))));

    let (_, body) = send(&e.host, "GET", "/api/fixture/version", "")
        .await
        .expect("new version");
    assert_eq!(body["version"], "v2");
    let (status, body) = in_flight.await.expect("join").expect("in-flight call");
    assert_eq!((status, body["version"].as_str()), (200, Some("v1")));

    // Removing the file unloads the plugin at the next reload.
    std::fs::remove_file(config.plugins_dir.join("fx.wasm")).expect("remove");
    e.host.reload(&config).await.expect("reload");
    assert!(e.host.find_route("GET", "/api/fixture/version").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_waits_briefly_then_fails_with_503() {
    let options = HostOptions {
        max_in_flight: 1,
        queue_wait: Duration::from_millis(50),
        ..options()
    };
    let e = env_with(
        &[("fx", FIXTURE)],
        "[plugins.fx]\ntime_budget_ms = 5000\n",
        Arc::new(SystemClock),
        options,
    );
    let host = e.host.clone();
    let slow =
        tokio::spawn(async move { send(&host, "GET", "/api/fixture/slow?ms=500", "").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = send(&e.host, "GET", "/api/fixture/version", "")
        .await
        .expect_err("overloaded");
    assert!(matches!(err, PluginError::Overloaded), "{err}");
    assert_eq!(err.http_status(), 503);
    assert_eq!(slow.await.expect("join").expect("slow call").0, 200);
}

#[tokio::test]
async fn repeated_failures_pause_a_plugin_until_the_cool_down_ends() {
    let clock = ManualClock::new();
    let options = HostOptions {
        breaker_threshold: 2,
        breaker_cooldown: Duration::from_secs(30),
        ..options()
    };
    let e = env_with(
        &[("spin", INFINITE_LOOP)],
        "[plugins.spin]\ntime_budget_ms = 20\nfuel = 10000000\n",
        clock.clone(),
        options,
    );
    for _ in 0..2 {
        failure(send(&e.host, "GET", "/api/spin", "").await);
    }
    let err = send(&e.host, "GET", "/api/spin", "")
        .await
        .expect_err("paused");
    assert!(
        matches!(
            err,
            PluginError::Unavailable {
                retry_after_ms: 30_000,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.http_status(), 503);
    assert!(matches!(
        status_of(&e.host, "spin"),
        PluginState::Loaded {
            paused_for_ms: Some(30_000),
            ..
        }
    ));
    clock.advance_secs(31);
    failure(send(&e.host, "GET", "/api/spin", "").await);
    assert!(matches!(
        send(&e.host, "GET", "/api/spin", "").await,
        Err(PluginError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn bad_plugin_config_is_reported_naming_the_key() {
    let e = env(
        &[("fx", FIXTURE)],
        "[plugins.fx]\ntime_budget_ms = \"fast\"\n",
    );
    let PluginState::Failed(why) = status_of(&e.host, "fx") else {
        panic!("fx loaded");
    };
    assert!(why.contains("time_budget_ms"), "{why}");
    let e = env(&[("fx", FIXTURE)], "[plugins.fx]\nenabled = false\n");
    assert_eq!(status_of(&e.host, "fx"), PluginState::Disabled);
    let e = env(&[("Bad-Name", FIXTURE)], "");
    assert!(matches!(
        status_of(&e.host, "Bad-Name"),
        PluginState::Failed(_)
    ));
}

#[tokio::test]
async fn compiled_plugins_are_cached_on_disk() {
    let cache = tempfile::tempdir().expect("cache");
    let options = || HostOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..options()
    };
    let first = env_with(&[("fx", FIXTURE)], "", ManualClock::new(), options());
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .expect("cache dir")
        .flatten()
        .collect();
    assert_eq!(cached.len(), 1, "one compiled component");
    drop(first);
    let started = Instant::now();
    let second = env_with(&[("fx", FIXTURE)], "", ManualClock::new(), options());
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        send(&second.host, "GET", "/api/fixture/version", "")
            .await
            .expect("call")
            .0,
        200
    );
    let _ = ManualClock::new().now_ms();
}

#[tokio::test]
async fn an_operator_file_replaces_a_built_in_plugin() {
    let e = env(&[("example-claims", FIXTURE)], "");
    let status = e
        .host
        .list()
        .into_iter()
        .find(|s| s.name == "example-claims")
        .expect("listed");
    assert!(status.source.ends_with("example-claims.wasm"), "{status:?}");
    assert!(matches!(
        status.state,
        PluginState::Loaded { routes: 12, .. }
    ));
    let route = e
        .host
        .find_route("GET", "/api/fixture/version")
        .expect("route");
    assert_eq!(route.plugin, "example-claims");
}
