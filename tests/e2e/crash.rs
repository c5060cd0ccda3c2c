//! Crash consistency (issue 8, item 4): mixed load against the real binary — logins
//! through the HTML form and code exchanges, refresh chains, partner events,
//! redemptions, logouts — while the server is `kill -9`ed at random moments and
//! restarted on the same folders and port. Afterwards the store must hold everything
//! the server acknowledged (DESIGN.md, "Storage": an acknowledged write is durable
//! before the response), and nothing twice.

use crate::support::*;
use mgpass::admin::{Command, NewClient, NewUser, Secret};
use mgpass::crypto::sha256_hex;
use mgpass::partner::PartnerSpec;
use mgpass::store::{Finished, LedgerKind, OutboxItem, OutboxKind, RefreshState, Store};
use mgpass::types::UserId;
use rand::RngExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kills per run (the issue asks for at least 10).
const KILLS: usize = 16;
/// Users, each driven by its own task (logins, refreshes, redemptions, logouts).
const USERS: usize = 5;
/// Tasks posting partner events for random users.
const EVENT_TASKS: usize = 3;
const PASSWORD: &str = "crash-test-password-9";
const CLIENT: &str = "crash-app";
const REDIRECT: &str = "https://crash-app.example/cb";
/// Points the one earning rule gives per `purchase` (Bronze ×1, partner ×1).
const RULE_POINTS: i64 = 10;

/// Where a chain stands with respect to logouts of its user.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LogoutMark {
    None,
    /// A logout was sent after the chain's last token and got no answer.
    Attempted,
    /// A logout after the chain's last token was acknowledged.
    Acked,
}

/// One refresh chain: the last refresh token the server acknowledged.
#[derive(Debug, Clone)]
struct Chain {
    user: String,
    refresh: String,
    access: String,
    sid: String,
    rotations: usize,
    logout: LogoutMark,
    /// A request with this token got no answer: it may or may not have rotated.
    ambiguous: bool,
}

#[derive(Debug)]
struct AckEvent {
    reference: String,
    user: String,
    points: i64,
    event_id: String,
}

#[derive(Debug)]
struct AckRedemption {
    id: String,
    user: String,
    points: i64,
}

/// Everything the server answered with success, and anything odd seen on the way.
#[derive(Default)]
struct Record {
    events: Vec<AckEvent>,
    redemptions: Vec<AckRedemption>,
    /// User → back-channel logouts queued by their acknowledged logouts.
    backchannel_queued: HashMap<String, u64>,
    logouts_acked: usize,
    logins: usize,
    refreshes: usize,
    chains: Vec<Chain>,
    /// Sessions (sid) that an acknowledged logout ended: never live again.
    dead_sids: Vec<(String, String)>,
    /// Users whose last logout was acknowledged with no login attempted since.
    logged_out_users: Vec<String>,
    anomalies: Vec<String>,
    failures: usize,
}

struct Ctx {
    base: String,
    addr: std::net::SocketAddr,
    cert: std::path::PathBuf,
    admin_socket: std::path::PathBuf,
    client_secret: String,
    partner_key: String,
    users: Vec<(String, String)>,
    stop: AtomicBool,
    record: Mutex<Record>,
}

impl Ctx {
    fn http(&self) -> reqwest::Client {
        client_builder(&self.cert, self.addr)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client")
    }

    fn browser(&self) -> reqwest::Client {
        client_builder(&self.cert, self.addr)
            .timeout(Duration::from_secs(5))
            .cookie_store(true)
            .build()
            .expect("client")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn anomaly(&self, what: String) {
        eprintln!("crash test anomaly: {what}");
        self.record.lock().unwrap().anomalies.push(what);
    }

    async fn admin(&self, command: &Command) -> Option<Result<Value, mgpass::admin::AdminError>> {
        tokio::time::timeout(
            Duration::from_secs(5),
            mgpass::admin::socket::send(&self.admin_socket, command),
        )
        .await
        .ok()?
        .ok()
    }
}

/// The payload of a JWT, unverified (the tests in login.rs verify signatures).
fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

/// Signs in through the HTML form with a fresh browser and exchanges the code; `Err`
/// with a reason on any failure (the server may die at any moment).
async fn login(ctx: &Ctx, username: &str, scope: &str) -> Result<Value, String> {
    let browser = ctx.browser();
    let (verifier, challenge) = pkce();
    let mut auth = url::Url::parse(&ctx.url("/authorize")).unwrap();
    auth.query_pairs_mut().extend_pairs([
        ("client_id", CLIENT),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", scope),
        ("state", "st"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    let page = browser
        .get(auth.as_str())
        .send()
        .await
        .map_err(|e| format!("authorize: {e}"))?;
    if page.status() != 200 {
        return Err(format!("authorize: {}", page.status()));
    }
    let html = page.text().await.map_err(|e| format!("form: {e}"))?;
    let (Some(auth_request), Some(csrf)) = (
        hidden_field(&html, "auth_request"),
        hidden_field(&html, "csrf"),
    ) else {
        return Err("no login form".into());
    };
    let resp = browser
        .post(ctx.url("/login"))
        .form(&[
            ("auth_request", auth_request.as_str()),
            ("csrf", csrf.as_str()),
            ("username", username),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .map_err(|e| format!("login: {e}"))?;
    if resp.status() != 302 {
        return Err(format!("login: {}", resp.status()));
    }
    let code = query_param(&location(&resp), "code").ok_or("no code")?;
    let resp = ctx
        .http()
        .post(ctx.url("/api/token"))
        .basic_auth(CLIENT, Some(&ctx.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .map_err(|e| format!("exchange: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| format!("exchange: {e}"))?;
    if status != 200 || body["refresh_token"].as_str().is_none() {
        return Err(format!("exchange: {status} {body}"));
    }
    Ok(body)
}

/// What one user's task keeps between operations.
struct UserTask {
    id: String,
    username: String,
    chain: Option<Chain>,
    /// Sessions this user got since the last acknowledged logout.
    sids: Vec<String>,
    /// The last logout was acknowledged and no login was attempted since.
    logged_out: bool,
}

impl UserTask {
    fn end_chain(&mut self, ctx: &Ctx) {
        if let Some(chain) = self.chain.take() {
            ctx.record.lock().unwrap().chains.push(chain);
        }
    }
}

async fn user_task(ctx: Arc<Ctx>, id: String, username: String) -> UserTask {
    let mut me = UserTask {
        id,
        username,
        chain: None,
        sids: Vec::new(),
        logged_out: false,
    };
    let http = ctx.http();
    while !ctx.stopped() {
        if me.chain.is_none() {
            me.logged_out = false;
            match login(&ctx, &me.username, "openid offline_access").await {
                Ok(tokens) => {
                    let sid = jwt_claims(tokens["id_token"].as_str().unwrap_or_default())["sid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    me.sids.push(sid.clone());
                    me.chain = Some(Chain {
                        user: me.id.clone(),
                        refresh: tokens["refresh_token"].as_str().unwrap().to_string(),
                        access: tokens["access_token"].as_str().unwrap().to_string(),
                        sid,
                        rotations: 0,
                        logout: LogoutMark::None,
                        ambiguous: false,
                    });
                    ctx.record.lock().unwrap().logins += 1;
                }
                Err(_) => {
                    ctx.record.lock().unwrap().failures += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let roll = rand::rng().random_range(0..100);
        if roll < 55 {
            refresh_once(&ctx, &http, &mut me).await;
        } else if roll < 88 {
            redeem_once(&ctx, &http, &mut me).await;
        } else {
            logout_once(&ctx, &mut me).await;
        }
    }
    me.end_chain(&ctx);
    me
}

async fn refresh_once(ctx: &Ctx, http: &reqwest::Client, me: &mut UserTask) {
    let chain = me.chain.as_mut().expect("chain");
    let sent = http
        .post(ctx.url("/api/token"))
        .basic_auth(CLIENT, Some(&ctx.client_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", chain.refresh.as_str()),
        ])
        .send()
        .await;
    let answer = match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            resp.json::<Value>().await.ok().map(|body| (status, body))
        }
        Err(_) => None,
    };
    match answer {
        Some((200, body)) if body["refresh_token"].is_string() => {
            chain.refresh = body["refresh_token"].as_str().unwrap().to_string();
            chain.access = body["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            chain.rotations += 1;
            ctx.record.lock().unwrap().refreshes += 1;
        }
        Some((400, body)) if body["error"] == "invalid_grant" => {
            // Only this task logs this user out and it never presents a token twice:
            // the server refused a token it had acknowledged.
            ctx.anomaly(format!(
                "user {}: the acknowledged refresh token (after {} rotations) was refused: {body}",
                me.id, chain.rotations
            ));
            me.end_chain(ctx);
        }
        _ => {
            // No answer (the server died) or a server error: the rotation may or may
            // not have happened. End the chain; its family is still checked.
            chain.ambiguous = true;
            ctx.record.lock().unwrap().failures += 1;
            me.end_chain(ctx);
        }
    }
}

async fn redeem_once(ctx: &Ctx, http: &reqwest::Client, me: &mut UserTask) {
    let chain = me.chain.as_ref().expect("chain");
    let points = rand::rng().random_range(1..=30);
    let sent = http
        .post(ctx.url("/api/account/cashback/redeem"))
        .bearer_auth(&chain.access)
        .json(&json!({"points": points, "phone_number": "0241234567", "network": "mtn"}))
        .send()
        .await;
    let Ok(resp) = sent else {
        ctx.record.lock().unwrap().failures += 1;
        return;
    };
    let status = resp.status().as_u16();
    let Ok(body) = resp.json::<Value>().await else {
        ctx.record.lock().unwrap().failures += 1;
        return;
    };
    match status {
        201 => {
            let id = body["redemption_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert_eq!(body["points"], points, "{body}");
            ctx.record.lock().unwrap().redemptions.push(AckRedemption {
                id,
                user: me.id.clone(),
                points,
            });
        }
        400 if body["error"] == "insufficient_points" => {}
        401 => ctx.anomaly(format!(
            "user {}: the access token of a live session was refused: {body}",
            me.id
        )),
        _ => ctx.record.lock().unwrap().failures += 1,
    }
}

async fn logout_once(ctx: &Ctx, me: &mut UserTask) {
    if let Some(chain) = me.chain.as_mut() {
        chain.logout = LogoutMark::Attempted;
    }
    let answer = ctx
        .admin(&Command::UserLogout {
            user: me.id.clone(),
        })
        .await;
    match answer {
        Some(Ok(v)) => {
            if let Some(chain) = me.chain.as_mut() {
                chain.logout = LogoutMark::Acked;
            }
            me.end_chain(ctx);
            let queued = v["logout"]["backchannel_queued"].as_u64().unwrap_or(0);
            let mut record = ctx.record.lock().unwrap();
            record.logouts_acked += 1;
            *record.backchannel_queued.entry(me.id.clone()).or_default() += queued;
            for sid in me.sids.drain(..) {
                record.dead_sids.push((me.id.clone(), sid));
            }
            me.logged_out = true;
        }
        Some(Err(e)) => ctx.anomaly(format!("user {}: logout refused: {e}", me.id)),
        None => {
            // Unknown outcome: the family may or may not be revoked.
            ctx.record.lock().unwrap().failures += 1;
            me.end_chain(ctx);
        }
    }
}

/// Posts partner events with unique references; a reference that got no answer is sent
/// again (same body) until it does, so lost answers exercise idempotency too.
async fn event_task(ctx: Arc<Ctx>, task: usize) {
    let http = ctx.http();
    let mut n = 0;
    while !ctx.stopped() {
        n += 1;
        let reference = format!("ref-{task}-{n}");
        let (user, _) = &ctx.users[rand::rng().random_range(0..ctx.users.len())];
        let body = json!({
            "user_id": user,
            "event_type": "purchase",
            "metadata": {"reference_id": reference, "amount": 12.5},
        });
        // Bounded: the server is always restarted, and up at the end.
        for _ in 0..400 {
            let sent = http
                .post(ctx.url("/api/partner/events"))
                .header("x-api-key", &ctx.partner_key)
                .json(&body)
                .send()
                .await;
            let answer = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    resp.json::<Value>().await.ok().map(|b| (status, b))
                }
                Err(_) => None,
            };
            match answer {
                Some((200, b)) => {
                    ctx.record.lock().unwrap().events.push(AckEvent {
                        reference: reference.clone(),
                        user: user.clone(),
                        points: b["points_awarded"].as_i64().expect("points_awarded"),
                        event_id: b["event_id"].as_str().unwrap_or_default().to_string(),
                    });
                    break;
                }
                Some((status, b)) if (400..500).contains(&status) => {
                    ctx.anomaly(format!("event {reference}: {status} {b}"));
                    break;
                }
                _ => {
                    ctx.record.lock().unwrap().failures += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "kill -9 under load keeps the machine busy for ~15 s; .ci/run runs it"]
async fn kill_9_under_mixed_load_loses_no_acknowledged_write() {
    let started = Instant::now();
    let backchannel = Receiver::start().await;
    let webhooks = Receiver::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let limits = "[plugins.rewards.limits]\nmin_points = 1\nmax_redemptions_per_day = 1000000\n\
                  max_amount_per_day = 100000000\nmin_minutes_between = 0\n";
    let mut server = KillableServer::spawn_in(dir.path(), port, limits).await;

    // --- setup over the admin socket and the admin API --------------------------------
    let admin = |c: Command| {
        let server = &server;
        async move {
            server
                .admin(&c)
                .await
                .expect("the server answers")
                .expect("admin command")
        }
    };
    let client = admin(Command::ClientAdd(NewClient {
        id: CLIENT.into(),
        secret: Secret::Generate,
        redirect_uris: vec![REDIRECT.into()],
        post_logout_redirect_uris: Vec::new(),
        backchannel_logout_uri: Some(backchannel.uri()),
        backchannel_logout_session_required: true,
        name: Some("Crash App".into()),
        first_party: true,
        id_token_alg: None,
    }))
    .await;
    let client_secret = client["client_secret"].as_str().unwrap().to_string();
    let mut users = Vec::new();
    for i in 0..USERS {
        let username = format!("crash{i}");
        let v = admin(Command::UserAdd(NewUser {
            username: username.clone(),
            email: Some(format!("{username}@example.com")),
            name: None,
            roles: Vec::new(),
            password: PASSWORD.into(),
        }))
        .await;
        users.push((v["id"].as_str().unwrap().to_string(), username));
    }
    admin(Command::UserAdd(NewUser {
        username: "crashadmin".into(),
        email: None,
        name: None,
        roles: vec!["mgpass:admin".into()],
        password: PASSWORD.into(),
    }))
    .await;
    let partner = admin(Command::PartnerAdd(PartnerSpec {
        name: Some("Crash Shop".into()),
        event_types: Some(vec!["purchase".into()]),
        multiplier: Some(1.0),
        webhook_url: Some(webhooks.uri()),
        enabled: None,
    }))
    .await;
    let partner_id = partner["id"].as_str().unwrap().to_string();
    let partner_key = partner["api_key"].as_str().unwrap().to_string();
    let ctx = Arc::new(Ctx {
        base: server.base(),
        addr: server.addr(),
        cert: server.cert_path(),
        admin_socket: dir.path().join("data/admin.sock"),
        client_secret,
        partner_key,
        users: users.clone(),
        stop: AtomicBool::new(false),
        record: Mutex::new(Record::default()),
    });
    let admin_tokens = login(&ctx, "crashadmin", "openid mgpass:admin")
        .await
        .expect("admin signs in");
    let resp = ctx
        .http()
        .post(ctx.url("/api/rewards/rules"))
        .bearer_auth(admin_tokens["access_token"].as_str().unwrap())
        .json(&json!({"event_type": "purchase", "points": RULE_POINTS}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    // Cashback webhooks go to the partner too: needs its id in the config, so restart
    // (with a kill, which does not count) with the final config.
    server.write_config(&format!(
        "[plugins.rewards]\nwebhook_partners = [\"{partner_id}\"]\n{limits}"
    ));
    server.kill9();
    server.start().await;
    let setup_time = started.elapsed();

    // --- load, and kill -9 at random moments --------------------------------------------
    let mut tasks = Vec::new();
    for (id, username) in users.clone() {
        tasks.push(tokio::spawn(user_task(ctx.clone(), id, username)));
    }
    let mut event_tasks = Vec::new();
    for t in 0..EVENT_TASKS {
        event_tasks.push(tokio::spawn(event_task(ctx.clone(), t)));
    }
    let mut kills = 0;
    let load_started = Instant::now();
    while kills < KILLS {
        let delay = rand::rng().random_range(100..=800);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill9();
        kills += 1;
        server.start().await;
    }
    // Some load on the last server, then stop the tasks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctx.stop.store(true, Ordering::SeqCst);
    let mut finished_users = Vec::new();
    for t in tasks {
        finished_users.push(
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    for t in event_tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
    }
    let load_time = load_started.elapsed();
    {
        let mut record = ctx.record.lock().unwrap();
        for u in &finished_users {
            if u.logged_out {
                record.logged_out_users.push(u.id.clone());
            }
        }
    }
    // Give the outbox a moment to deliver (not required: pending is fine too).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.terminate(),
        Some(0),
        "clean stop; log:\n{}",
        server.log_tail()
    );

    // --- invariants, against the store ---------------------------------------------------
    let record = ctx.record.lock().unwrap();
    let store = Store::open(&dir.path().join("data/db")).expect("store opens");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut problems: Vec<String> = record.anomalies.clone();
    let mut checked = 0usize;

    // Ledger: every entry of every user, in seq order.
    let mut ledger = BTreeMap::new();
    for (id, _) in users.iter() {
        let mut entries = store.ledger_entries(id, None, usize::MAX).unwrap();
        entries.reverse();
        let balance = store.ledger_balance(id).unwrap();
        let mut sum = 0;
        for (i, e) in entries.iter().enumerate() {
            sum += e.points;
            if e.seq != i as u64 + 1 || e.balance_after != sum || e.balance_after < 0 {
                problems.push(format!(
                    "user {id}: entry {i} out of line (running sum {sum}): {e:?}"
                ));
            }
        }
        checked += 1;
        if balance.points != sum || balance.seq != entries.len() as u64 || balance.points < 0 {
            problems.push(format!(
                "user {id}: balance {balance:?} but {} entries summing to {sum}",
                entries.len()
            ));
        }
        ledger.insert(id.clone(), entries);
    }
    let all_entries: Vec<_> = ledger.values().flatten().collect();

    // Events: each acknowledged one is recorded and in the ledger exactly once; no
    // reference is in the ledger twice, acknowledged or not.
    let records: HashMap<String, mgpass::store::EventRecord> =
        store.event_records().unwrap().into_iter().collect();
    let mut earned: HashMap<&str, Vec<&mgpass::store::LedgerEntry>> = HashMap::new();
    for e in &all_entries {
        if e.kind == LedgerKind::Earn && e.partner.as_deref() == Some(partner_id.as_str()) {
            earned
                .entry(e.reference.as_deref().unwrap_or_default())
                .or_default()
                .push(e);
        }
    }
    for (reference, entries) in &earned {
        if entries.len() != 1 {
            problems.push(format!(
                "reference {reference} earned {} times",
                entries.len()
            ));
        }
        if !records.contains_key(&format!("event/{partner_id}/{reference}")) {
            problems.push(format!(
                "reference {reference} earned without an event record"
            ));
        }
    }
    // The event record and the award commit together: no record without its entry.
    let prefix = format!("event/{partner_id}/");
    for (key, r) in &records {
        let reference = key.strip_prefix(&prefix).unwrap_or(key);
        let entries = earned.get(reference).map(Vec::len).unwrap_or(0);
        if r.points_awarded > 0 && entries != 1 {
            problems.push(format!(
                "event record {key} awarded {} points; ledger entries: {entries}",
                r.points_awarded
            ));
        }
    }
    for ev in &record.events {
        checked += 1;
        if ev.points <= 0 {
            // The earning rule (acknowledged with 201 before the first kill) matches
            // every purchase.
            problems.push(format!("event {ev:?} awarded nothing: was the rule lost?"));
        }
        match records.get(&format!("event/{partner_id}/{}", ev.reference)) {
            Some(r) if r.event_id == ev.event_id && r.points_awarded == ev.points => {}
            other => problems.push(format!("event {ev:?}: record {other:?}")),
        }
        let entries = earned
            .get(ev.reference.as_str())
            .cloned()
            .unwrap_or_default();
        let ok = match entries.as_slice() {
            [e] => e.user == ev.user && e.points == ev.points,
            [] => ev.points == 0,
            _ => false,
        };
        if !ok {
            problems.push(format!("event {ev:?}: ledger has {entries:?}"));
        }
    }

    // Redemptions: each acknowledged one debited exactly once.
    for r in &record.redemptions {
        checked += 1;
        let debits: Vec<_> = all_entries
            .iter()
            .filter(|e| e.kind == LedgerKind::Redeem && e.reference.as_deref() == Some(&r.id))
            .collect();
        if !matches!(debits.as_slice(), [e] if e.user == r.user && e.points == -r.points) {
            problems.push(format!("redemption {r:?}: ledger has {debits:?}"));
        }
    }

    // Refresh families: at most one live token; exactly one while not revoked.
    let families = store.families().unwrap();
    for f in &families {
        checked += 1;
        let live = store.live_tokens_in_family(&f.id, now).unwrap();
        if live > 1 || (!f.revoked && live != 1) {
            problems.push(format!(
                "family {} (revoked: {}) has {live} live tokens",
                f.id, f.revoked
            ));
        }
    }
    // Chains: the last acknowledged token is still usable, or a logout revoked it.
    for chain in &record.chains {
        checked += 1;
        let Some((token, family)) = store
            .refresh_family(&sha256_hex(chain.refresh.as_bytes()))
            .unwrap()
        else {
            problems.push(format!(
                "user {}: an acknowledged refresh token is unknown (after {} rotations)",
                chain.user, chain.rotations
            ));
            continue;
        };
        let usable = !family.revoked
            && token.state == RefreshState::Active
            && token.expires_at > now
            && store.sid_is_live(&family.sid, now).unwrap();
        let fine = match (chain.logout, chain.ambiguous) {
            (LogoutMark::Acked, _) => family.revoked,
            (LogoutMark::Attempted, _) => family.revoked || usable,
            // Its last request may have rotated it; the family checks above cover it.
            (LogoutMark::None, true) => true,
            (LogoutMark::None, false) => usable,
        };
        if !fine {
            problems.push(format!(
                "chain of user {} ({:?}, ambiguous {}, {} rotations): token {:?}, family revoked {}, session live {}",
                chain.user,
                chain.logout,
                chain.ambiguous,
                chain.rotations,
                token.state,
                family.revoked,
                store.sid_is_live(&family.sid, now).unwrap()
            ));
        }
        if family.sid != chain.sid {
            problems.push(format!(
                "chain of user {}: family of another session",
                chain.user
            ));
        }
    }

    // Sessions: none that an acknowledged logout ended is live; a user whose last
    // logout was acknowledged (no login since) has no live session at all.
    for (user, sid) in &record.dead_sids {
        checked += 1;
        if store.sid_is_live(sid, now).unwrap() {
            problems.push(format!(
                "user {user}: session {sid} live after an acknowledged logout"
            ));
        }
    }
    for user in &record.logged_out_users {
        checked += 1;
        let live = store
            .sessions_of(&serde_json::from_value::<UserId>(json!(user)).unwrap(), now)
            .unwrap();
        if !live.is_empty() {
            problems.push(format!(
                "user {user}: {} live sessions after logout",
                live.len()
            ));
        }
    }

    // Outbox: what was queued is delivered or pending; nothing given up, nothing lost.
    let pending = store.outbox_pending().unwrap();
    let finished = store.outbox_finished().unwrap();
    let mut items: Vec<(&OutboxItem, &str)> = pending.iter().map(|i| (i, "pending")).collect();
    for (how, _, item) in &finished {
        match how {
            Finished::Delivered => items.push((item, "delivered")),
            Finished::GaveUp => problems.push(format!("outbox item given up: {item:?}")),
        }
    }
    let mut backchannel_items: HashMap<String, u64> = HashMap::new();
    let mut webhook_items: HashMap<(String, String), usize> = HashMap::new();
    let (mut delivered_backchannel, mut delivered_webhooks) = (Vec::new(), Vec::new());
    for (item, state) in &items {
        match &item.kind {
            OutboxKind::BackchannelLogout { sub, .. } => {
                *backchannel_items
                    .entry(sub.as_str().to_string())
                    .or_default() += 1;
                if *state == "delivered" {
                    delivered_backchannel.push(item.id.clone());
                }
            }
            OutboxKind::Webhook {
                event_type,
                payload,
                ..
            } => {
                let key = payload["reference_id"]
                    .as_str()
                    .or(payload["redemption_id"].as_str())
                    .unwrap_or_default()
                    .to_string();
                *webhook_items.entry((event_type.clone(), key)).or_default() += 1;
                if *state == "delivered" {
                    delivered_webhooks.push(item.id.clone());
                }
            }
        }
    }
    for (user, queued) in &record.backchannel_queued {
        checked += 1;
        let found = backchannel_items.get(user).copied().unwrap_or(0);
        if found < *queued {
            problems.push(format!(
                "user {user}: {queued} back-channel logouts acknowledged as queued, {found} in the outbox"
            ));
        }
    }
    let mut expected_webhooks: Vec<(&str, &str)> = Vec::new();
    for ev in record.events.iter().filter(|e| e.points > 0) {
        expected_webhooks.push(("rewards.points_awarded", &ev.reference));
    }
    for r in &record.redemptions {
        expected_webhooks.push(("cashback.redeemed", &r.id));
        expected_webhooks.push(("rewards.redeemed", &r.id));
    }
    for (event_type, key) in &expected_webhooks {
        checked += 1;
        if !webhook_items.contains_key(&(event_type.to_string(), key.to_string())) {
            problems.push(format!(
                "webhook {event_type} for {key} is neither delivered nor pending"
            ));
        }
    }
    // What the store calls delivered, the receivers really got.
    let received_webhooks: Vec<String> = webhooks
        .accepted()
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect();
    for id in &delivered_webhooks {
        if !received_webhooks.contains(id) {
            problems.push(format!(
                "webhook {id} recorded delivered but never received"
            ));
        }
    }
    if backchannel.accepted().len() < delivered_backchannel.len() {
        problems.push(format!(
            "{} back-channel logouts recorded delivered, {} received",
            delivered_backchannel.len(),
            backchannel.accepted().len()
        ));
    }

    let operations = record.events.len()
        + record.redemptions.len()
        + record.logins
        + record.refreshes
        + record.logouts_acked;
    eprintln!(
        "crash consistency: {kills} kills (plus 1 for the config change), {operations} acknowledged operations \
         ({} events, {} redemptions, {} logins with code exchange, {} refreshes, {} logouts), \
         {} requests without a success answer; {checked} invariant checks over {} families, \
         {} ledger entries, {} outbox items ({} pending); setup {:.1?}, load {:.1?}, total {:.1?}",
        record.events.len(),
        record.redemptions.len(),
        record.logins,
        record.refreshes,
        record.logouts_acked,
        record.failures,
        families.len(),
        all_entries.len(),
        items.len(),
        pending.len(),
        setup_time,
        load_time,
        started.elapsed(),
    );
    assert!(
        problems.is_empty(),
        "{} invariant violations:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(kills >= 10);
    assert!(
        record.events.len() >= KILLS && record.refreshes >= KILLS && record.logouts_acked > 0,
        "too little load to mean anything"
    );
}
