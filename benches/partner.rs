//! Micro benchmarks of the partner API's hot checks: looking up a partner by API key
//! (shape check, SHA-256, indexed store read) and the per-IP rate limit (GCRA).
//!
//! Run with `cargo bench --bench partner`.

use criterion::{Criterion, criterion_group, criterion_main};
use mgpass::clock::ManualClock;
use mgpass::crypto::sha256_hex;
use mgpass::partner::keys;
use mgpass::partner::ratelimit::{Bucket, RateLimiter};
use mgpass::store::{Partner, PartnerKey, Store};
use std::hint::black_box;
use std::net::IpAddr;

fn api_key_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let key = keys::generate();
    let partner = Partner {
        id: "ptn_bench".into(),
        name: "Bench".into(),
        event_types: vec!["purchase".into()],
        multiplier: 1.0,
        webhook_url: None,
        enabled: true,
        created_at: 0,
        updated_at: 0,
        keys: vec![PartnerKey {
            key_id: "key_bench".into(),
            digest: sha256_hex(key.as_bytes()),
            created_at: 0,
            expires_at: None,
            last_used_at: None,
        }],
        webhook_secrets: Vec::new(),
        webhook_disabled_at: None,
        webhook_failing_since: None,
    };
    store.insert_partner(&partner).expect("partner");
    c.bench_function("api_key_lookup", |b| {
        b.iter(|| {
            let key = black_box(key.as_str());
            assert!(keys::well_formed(key));
            let found = store
                .partner_by_key_digest(&sha256_hex(key.as_bytes()), 1)
                .expect("lookup");
            black_box(found.is_some())
        })
    });
}

fn rate_limit_check(c: &mut Criterion) {
    let limiter = RateLimiter::new(ManualClock::new(), 30, 100_000_000);
    let ips: Vec<IpAddr> = (0..1024u32)
        .map(|i| IpAddr::from([10, 0, (i >> 8) as u8, i as u8]))
        .collect();
    let mut n = 0usize;
    c.bench_function("rate_limit_check", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            black_box(limiter.check(Bucket::Api, ips[n % ips.len()]))
        })
    });
}

criterion_group!(benches, api_key_lookup, rate_limit_check);
criterion_main!(benches);
