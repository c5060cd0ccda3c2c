//! Per-call overhead of the plugin host: a trivial hook (fresh store from the
//! pre-linked instance, call, nothing to commit) and the partner-event hook with one
//! ledger write and one webhook (commit + flush). Run with `cargo bench --bench
//! plugin_call`.

use criterion::{Criterion, criterion_group, criterion_main};
use mgpass::clock::SystemClock;
use mgpass::config::Config;
use mgpass::plugin::{Partner, PartnerEvent, PluginHost, testdata};
use mgpass::store::{Store, User};
use mgpass::types::{ClientId, UserId};
use std::hint::black_box;
use std::sync::Arc;

fn plugin_call(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::parse("", dir.path()).expect("config");
    std::fs::create_dir_all(&config.plugins_dir).expect("plugins dir");
    std::fs::write(config.plugins_dir.join("fx.wasm"), testdata::FIXTURE).expect("plugin");
    let store = Store::open(&dir.path().join("db")).expect("store");
    let user = User {
        id: UserId::generate(),
        username: "bench".into(),
        email: None,
        name: None,
        roles: Vec::new(),
        password_hash: String::new(),
        created_at: 0,
        updated_at: 0,
    };
    store.insert_user(&user).expect("user");
    let host = PluginHost::load(&config, store, Arc::new(SystemClock)).expect("host");
    let client = ClientId::parse("bench-app").expect("client");

    // Every call runs in a task on a worker, as a request handler does; the first
    // benchmark is that baseline.
    let on_worker = |f: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>| {
        runtime.block_on(runtime.spawn(f)).expect("join")
    };

    c.bench_function("baseline: spawned empty task", |b| {
        b.iter(|| on_worker(Box::pin(async {})))
    });

    c.bench_function("trivial hook (authorize-login)", |b| {
        b.iter(|| {
            let (host, user, client) = (host.clone(), user.clone(), client.clone());
            on_worker(Box::pin(async move {
                black_box(host.authorize_login(&user, &client).await.expect("call"));
            }))
        })
    });

    let partner = Partner {
        id: "ptn_bench".into(),
        name: "Bench".into(),
        multiplier: 1.0,
    };
    let mut n = 0u64;
    c.bench_function("partner event, one ledger write + webhook, durable", |b| {
        b.iter(|| {
            n += 1;
            let event = PartnerEvent {
                event_id: format!("evt_{n}"),
                user_id: user.id.to_string(),
                event_type: "purchase".into(),
                metadata: r#"{"amount": 3}"#.into(),
                reference_id: format!("ref-{n}"),
            };
            let (host, partner) = (host.clone(), partner.clone());
            on_worker(Box::pin(async move {
                black_box(
                    host.on_partner_event(event, partner, None)
                        .await
                        .expect("call"),
                );
            }))
        })
    });

    // For comparison: the cost of a hop to the blocking pool (the host runs calls in
    // `block_in_place`; both measured about the same per call).
    c.bench_function("reference: spawn_blocking hop from a task", |b| {
        b.iter(|| {
            on_worker(Box::pin(async {
                black_box(tokio::task::spawn_blocking(|| 1).await.expect("join"));
            }))
        })
    });
}

criterion_group!(benches, plugin_call);
criterion_main!(benches);
