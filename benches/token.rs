//! Micro benchmarks of the token endpoint's work, driving `App` directly (no HTTP, no
//! TLS): a code exchange (lookup, PKCE, two ES256 signatures, durable store write),
//! refresh rotation, and JWT sign / verify.
//!
//! Run with `cargo bench --bench token`.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mgpass::admin::{self, Command, NewClient, NewUser, Secret};
use mgpass::app::App;
use mgpass::clock::ManualClock;
use mgpass::config::Config;
use mgpass::crypto::{b64url, random_token, sha256, sha256_hex};
use mgpass::keys::Alg;
use mgpass::oidc::token::{exchange_code, refresh_grant};
use mgpass::store::{AuthCode, Client, Session, User};
use mgpass::types::{ClientId, RedirectUri, Scopes};
use serde_json::json;
use std::cell::RefCell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

const REDIRECT: &str = "https://bench.example/callback";
/// A new user (and session) every this many exchanges, so the per-user index stays the
/// size a real user's would be instead of growing with every benchmark iteration.
const EXCHANGES_PER_USER: usize = 50;

struct Fixture {
    _dir: tempfile::TempDir,
    rt: Runtime,
    app: Arc<App>,
    client: Client,
    users: usize,
    current: Option<(User, Session)>,
    used: usize,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = r#"
issuer = "https://localhost:8443"
[login]
argon2_memory_kib = 64
argon2_iterations = 1
"#;
        let config = Config::parse(text, dir.path()).expect("config");
        let clock = ManualClock::new();
        let app = App::open(config, clock).expect("app");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(admin::execute(
            &app,
            Command::ClientAdd(NewClient {
                id: "bench".into(),
                secret: Secret::Generate,
                redirect_uris: vec![REDIRECT.into()],
                post_logout_redirect_uris: vec![],
                backchannel_logout_uri: None,
                backchannel_logout_session_required: false,
                name: Some("Bench".into()),
                first_party: true,
                id_token_alg: None,
            }),
        ))
        .expect("client");
        let client = app
            .store
            .client(&ClientId::parse("bench").unwrap())
            .unwrap()
            .expect("client stored");
        Fixture {
            _dir: dir,
            rt,
            app,
            client,
            users: 0,
            current: None,
            used: 0,
        }
    }

    /// A signed-in user, replaced every `EXCHANGES_PER_USER` calls.
    fn session(&mut self) -> (User, Session) {
        if self.current.is_none() || self.used >= EXCHANGES_PER_USER {
            self.users += 1;
            let name = format!("user{}", self.users);
            let app = self.app.clone();
            let (user, session) = self.rt.block_on(async move {
                admin::execute(
                    &app,
                    Command::UserAdd(NewUser {
                        username: name.clone(),
                        email: None,
                        name: None,
                        roles: vec![],
                        password: "benchmark-password".into(),
                    }),
                )
                .await
                .expect("user");
                let user = app
                    .store
                    .user_by_login(&name)
                    .unwrap()
                    .expect("user stored");
                let (_, session) = app.start_session(&user, false).await.expect("session");
                (user, session)
            });
            self.current = Some((user, session));
            self.used = 0;
        }
        self.used += 1;
        self.current.clone().expect("current user")
    }

    /// Stores a fresh code as `/authorize` would; returns the code and its verifier.
    fn new_code(&mut self) -> (String, String) {
        let (user, session) = self.session();
        let verifier = random_token();
        let code = random_token();
        let now = self.app.clock.now();
        self.app
            .store
            .insert_code(
                &sha256_hex(code.as_bytes()),
                &AuthCode {
                    client_id: self.client.id.clone(),
                    redirect_uri: RedirectUri::parse(REDIRECT).unwrap(),
                    code_challenge: b64url(&sha256(verifier.as_bytes())),
                    nonce: Some("n0".into()),
                    scope: Scopes::parse("openid profile").unwrap(),
                    user_id: user.id.clone(),
                    sid: session.sid.clone(),
                    auth_time: session.auth_time,
                    expires_at: now + 60,
                    redeemed: None,
                },
            )
            .expect("insert code");
        (code, verifier)
    }

    fn exchange(&self, code: &str, verifier: &str) -> serde_json::Value {
        self.rt
            .block_on(exchange_code(
                &self.app,
                &self.client,
                code,
                verifier,
                REDIRECT,
            ))
            .expect("exchange")
    }
}

fn benches(c: &mut Criterion) {
    mgpass::install_crypto_provider();
    // Setup (storing a code) needs `&mut`, the measured routine `&`: share it in a cell.
    let cell = RefCell::new(Fixture::new());

    c.bench_function("code_exchange", |b| {
        b.iter_batched(
            || cell.borrow_mut().new_code(),
            |(code, verifier)| black_box(cell.borrow().exchange(&code, &verifier)),
            BatchSize::PerIteration,
        )
    });

    c.bench_function("refresh_rotation", |b| {
        b.iter_batched(
            || {
                let (code, verifier) = cell.borrow_mut().new_code();
                cell.borrow().exchange(&code, &verifier)["refresh_token"]
                    .as_str()
                    .expect("refresh token")
                    .to_string()
            },
            |token| {
                let f = cell.borrow();
                black_box(
                    f.rt.block_on(refresh_grant(&f.app, &f.client, &token, None))
                        .expect("refresh"),
                )
            },
            BatchSize::PerIteration,
        )
    });

    let mut f = cell.into_inner();

    // The durable-write share of the above: one small transaction and its fsync.
    c.bench_function("store_write_flush", |b| {
        b.iter_batched(
            random_token,
            |jti| {
                f.app.store.revoke_access_token(&jti, 0).unwrap();
                f.rt.block_on(f.app.store.flush()).unwrap()
            },
            BatchSize::PerIteration,
        )
    });

    let now = f.app.clock.now();
    let claims = json!({
        "iss": "https://localhost:8443", "sub": "usr_x", "aud": "https://localhost:8443",
        "client_id": "bench", "scope": "openid profile", "iat": now, "exp": now + 600,
        "jti": "at_x", "sid": "sid_x",
    });
    c.bench_function("jwt_sign_es256", |b| {
        b.iter(|| black_box(f.app.keys.sign(&claims, "at+jwt", Alg::ES256, now).unwrap()))
    });
    let token = f.app.keys.sign(&claims, "at+jwt", Alg::ES256, now).unwrap();
    c.bench_function("jwt_verify_es256", |b| {
        b.iter(|| black_box(f.app.keys.verify(&token, now).unwrap()))
    });
    c.bench_function("jwt_sign_rs256", |b| {
        b.iter(|| black_box(f.app.keys.sign(&claims, "JWT", Alg::RS256, now).unwrap()))
    });
    // The whole access-token check a resource API does: signature, claims, revocation
    // and session liveness lookups.
    let (code, verifier) = f.new_code();
    let access = f.exchange(&code, &verifier)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    c.bench_function("verify_access_token", |b| {
        b.iter(|| black_box(f.app.verify_access_token(&access).unwrap()))
    });
}

criterion_group! {
    name = token;
    config = Criterion::default()
        .sample_size(50)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(token);
