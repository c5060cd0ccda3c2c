//! `mgpass bench`: a load tool that drives a running server over HTTPS the way real
//! clients do and reports, per scenario, requests, errors, requests/s and latency
//! percentiles.
//!
//! It creates what it needs through the admin socket (a first-party confidential
//! client, one user per worker, a partner), runs each scenario with `--concurrency`
//! workers for `--duration` or `--requests` iterations, and removes the client and
//! users (and disables the partner) at the end. `--ceiling` measures the raw ES256
//! sign/verify rate in-process instead, the limit for token issuance.

mod ceiling;
pub mod report;
pub mod scenarios;
pub mod stats;

use crate::admin::{self, Command, NewClient, NewUser, Secret};
use crate::config::Config;
use report::{ErrorKind, ScenarioReport};
pub use scenarios::Scenario;
use scenarios::{BenchUser, Failure, Fixture, Target, Worker};
use serde_json::Value;
use stats::Samples;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `--connections`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Connections {
    /// One client per worker; connections are reused.
    KeepAlive,
    /// A new TCP + TLS connection for every request.
    New,
}

impl Connections {
    pub fn name(self) -> &'static str {
        match self {
            Connections::KeepAlive => "keep-alive",
            Connections::New => "new",
        }
    }
}

/// The `bench` subcommand's options (`--config` and `--json` are global).
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Base URL of the server (default: the issuer in the configuration).
    #[arg(long)]
    pub url: Option<String>,
    /// Scenarios, comma-separated, or "all": discovery, jwks, login-code, sso-code,
    /// refresh, userinfo, introspect, partner-events, account-rewards.
    #[arg(long, value_delimiter = ',', required_unless_present = "ceiling")]
    pub scenario: Vec<String>,
    /// Concurrent workers (simulated clients).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How long each scenario runs, e.g. "10s" (the default).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Run each scenario for this many iterations instead of a duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Reuse connections (keep-alive) or open a new TLS connection per request (new).
    #[arg(long, value_enum, default_value_t = Connections::KeepAlive)]
    pub connections: Connections,
    /// Trust this PEM certificate (default: the server's certificate from the
    /// configuration: `tls.cert`, or the generated `data_dir/tls-cert.pem`).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Do not verify the server's certificate.
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// Offer HTTP/1.1 only (default: HTTP/2 when the server agrees, as it does).
    #[arg(long)]
    pub http1: bool,
    /// Measure the raw ES256 sign and verify rate in-process (no server) and exit.
    #[arg(long)]
    pub ceiling: bool,
}

/// How to trust the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    Ca(PathBuf),
    Insecure,
}

/// When a scenario stops.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Duration(Duration),
    Requests(u64),
}

/// Everything a run needs, independent of the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    pub admin_socket: PathBuf,
    pub trust: Trust,
    pub scenarios: Vec<Scenario>,
    pub concurrency: usize,
    pub limit: Limit,
    pub connections: Connections,
    pub http1: bool,
    /// Print the `\r` progress line on stderr.
    pub progress: bool,
}

impl Options {
    pub fn from_args(config: &Config, args: &BenchArgs) -> Result<Options, String> {
        if args.concurrency == 0 || args.concurrency > 10_000 {
            return Err("--concurrency must be between 1 and 10000".into());
        }
        let limit = match (args.requests, args.duration) {
            (Some(0), _) => return Err("--requests must be at least 1".into()),
            (Some(n), _) => Limit::Requests(n),
            (None, Some(d)) if d.is_zero() => return Err("--duration must be positive".into()),
            (None, Some(d)) => Limit::Duration(d),
            (None, None) => Limit::Duration(Duration::from_secs(10)),
        };
        let trust = if args.insecure {
            Trust::Insecure
        } else {
            Trust::Ca(args.ca.clone().unwrap_or_else(|| {
                config
                    .tls
                    .cert
                    .clone()
                    .unwrap_or_else(|| config.data_dir.join("tls-cert.pem"))
            }))
        };
        Ok(Options {
            url: args
                .url
                .clone()
                .unwrap_or_else(|| config.issuer_base().to_string()),
            admin_socket: config.admin_socket_path(),
            trust,
            scenarios: Scenario::parse_list(&args.scenario)?,
            concurrency: args.concurrency,
            limit,
            connections: args.connections,
            http1: args.http1,
            progress: true,
        })
    }
}

/// `mgpass bench …`
pub fn cli_main(
    runtime: &tokio::runtime::Runtime,
    config: Config,
    args: BenchArgs,
    json: bool,
) -> ExitCode {
    if args.ceiling {
        let result = ceiling::measure(Duration::from_secs(2));
        return match result {
            Ok(c) => {
                println!("{}", if json { c.json() } else { c.table() });
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mgpass bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let options = match Options::from_args(&config, &args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mgpass bench: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&options)) {
        Ok(reports) => {
            if json {
                println!("{}", report::json(&reports));
            } else {
                print!("{}", report::table(&reports));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mgpass bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The rustls client configuration: the given CA, or no verification.
fn tls_config(trust: &Trust, http1: bool) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
        Trust::Ca(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| {
                    format!(
                        "cannot read the server certificate {} ({e}); pass --ca FILE or --insecure",
                        path.display()
                    )
                })?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no certificate in file", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = if http1 {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// `--insecure`: accepts any certificate but still checks the handshake signatures.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Resolves the URL's host once and picks the first address that accepts a TCP
/// connection, so neither DNS nor a refused `::1` attempt is measured.
async fn connect_target(options: &Options) -> Result<Target, String> {
    let url = url::Url::parse(&options.url).map_err(|e| format!("--url {:?}: {e}", options.url))?;
    if url.scheme() != "https" {
        return Err(format!("--url {:?}: mgpass serves https only", options.url));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("--url {:?} has no host", options.url))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = String::from("no address");
    let mut chosen = None;
    for addr in addrs {
        match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(_)) => {
                chosen = Some(addr);
                break;
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: timed out"),
        }
    }
    let addr = chosen.ok_or_else(|| {
        format!(
            "cannot connect to {} ({last}); is the server running (`mgpass serve`)?",
            options.url
        )
    })?;
    let base = options.url.trim_end_matches('/').to_string();
    Ok(Target::new(
        base,
        host,
        addr,
        tls_config(&options.trust, options.http1)?,
        options.http1,
        options.connections == Connections::KeepAlive,
    ))
}

async fn admin_command(socket: &Path, command: Command) -> Result<Value, String> {
    // A wedged server must not hang the tool: every admin command gets 30 seconds.
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        admin::socket::send(socket, &command),
    )
    .await
    .map_err(|_| {
        format!(
            "the server did not answer an admin command within 30 s on {}",
            socket.display()
        )
    })?;
    match answer {
        Err(e) => Err(format!(
            "no mgpass server answers on its admin socket {} ({e}); start it with \
             `mgpass serve` and pass the same --config to bench",
            socket.display()
        )),
        Ok(Err(e)) => Err(format!("admin command failed: {e}")),
        Ok(Ok(v)) => Ok(v),
    }
}

/// Creates the client, the users and the partner through the admin socket.
async fn setup(options: &Options) -> Result<Fixture, String> {
    let run_id = crate::crypto::random_id("bench")[..13].to_string();
    let socket = &options.admin_socket;
    let client_id = format!("{run_id}-client");
    let redirect_uri = "http://127.0.0.1/bench/callback".to_string();
    let created = admin_command(
        socket,
        Command::ClientAdd(NewClient {
            id: client_id.clone(),
            secret: Secret::Generate,
            redirect_uris: vec![redirect_uri.clone()],
            post_logout_redirect_uris: Vec::new(),
            backchannel_logout_uri: None,
            backchannel_logout_session_required: false,
            name: Some("mgpass bench".into()),
            first_party: true,
            id_token_alg: None,
        }),
    )
    .await?;
    let client_secret = created["client_secret"]
        .as_str()
        .ok_or("the server did not return a client secret")?
        .to_string();
    let mut users = Vec::new();
    if options.scenarios.iter().any(|s| s.needs_users()) {
        for i in 0..options.concurrency {
            let username = format!("{run_id}-u{i}");
            let password = crate::crypto::random_token();
            let v = admin_command(
                socket,
                Command::UserAdd(NewUser {
                    username: username.clone(),
                    email: Some(format!("{username}@bench.invalid")),
                    name: Some(format!("Bench User {i}")),
                    roles: Vec::new(),
                    password: password.clone(),
                }),
            )
            .await?;
            let id = v["id"]
                .as_str()
                .ok_or("the server did not return a user id")?
                .to_string();
            users.push(BenchUser {
                id,
                username,
                password,
            });
        }
    }
    let partner_key = if options.scenarios.contains(&Scenario::PartnerEvents) {
        admin_command(
            socket,
            Command::PartnerAdd(crate::partner::PartnerSpec {
                name: Some(format!("{run_id} partner")),
                event_types: Some(vec!["purchase".into()]),
                ..Default::default()
            }),
        )
        .await
        .and_then(|v| {
            let id = v["id"].as_str().unwrap_or_default().to_string();
            v["api_key"]
                .as_str()
                .map(|k| (id, k.to_string()))
                .ok_or_else(|| "the server did not return a partner API key".to_string())
        })
    } else {
        Err("no partner was created".into())
    };
    let (partner_id, partner_key) = match partner_key {
        Ok((id, key)) => (Some(id), Ok(key)),
        Err(e) => (None, Err(e)),
    };
    Ok(Fixture {
        run_id,
        client_id,
        client_secret,
        redirect_uri,
        users,
        partner_key,
        partner_id,
    })
}

/// Removes what [`setup`] created (best effort: a failure is only reported).
async fn cleanup(options: &Options, fixture: &Fixture) {
    let socket = &options.admin_socket;
    let mut commands: Vec<Command> = fixture
        .users
        .iter()
        .map(|u| Command::UserRemove { user: u.id.clone() })
        .collect();
    commands.push(Command::ClientRemove {
        id: fixture.client_id.clone(),
    });
    if let Some(id) = &fixture.partner_id {
        commands.push(Command::PartnerUpdate {
            id: id.clone(),
            spec: crate::partner::PartnerSpec {
                enabled: Some(false),
                ..Default::default()
            },
        });
    }
    for command in commands {
        if let Err(e) = admin_command(socket, command).await {
            // One failure is enough: a server that does not answer will not answer
            // the next command either.
            eprintln!("mgpass bench: cleanup stopped: {e}");
            break;
        }
    }
}

/// Runs every selected scenario in turn; fails only when the server cannot be reached
/// or set up. A scenario that fails is reported with its errors.
pub async fn run(options: &Options) -> Result<Vec<ScenarioReport>, String> {
    let target = Arc::new(connect_target(options).await?);
    // One request before the admin work: a TLS or trust problem shows here, clearly.
    let probe = target.client()?;
    probe
        .get(target.url("/.well-known/openid-configuration"))
        .send()
        .await
        .map_err(|e| {
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                detail.push_str(": ");
                detail.push_str(&s.to_string());
                source = s.source();
            }
            format!("cannot reach {}: {detail}", target.base)
        })?;
    let fixture = Arc::new(setup(options).await?);
    let mut reports = Vec::new();
    for &scenario in &options.scenarios {
        reports.push(run_scenario(options, &target, &fixture, scenario).await);
    }
    cleanup(options, &fixture).await;
    Ok(reports)
}

/// What one worker measured.
#[derive(Default)]
struct Tally {
    samples: Samples,
    errors: BTreeMap<String, (u64, String)>,
    requests: u64,
}

impl Tally {
    fn failed(&mut self, f: Failure) {
        let entry = self.errors.entry(f.kind).or_insert((0, f.detail));
        entry.0 += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.samples.merge(other.samples);
        self.requests += other.requests;
        for (kind, (count, example)) in other.errors {
            self.errors.entry(kind).or_insert((0, example)).0 += count;
        }
    }
}

/// Live counters for the progress line and the stop rule.
struct Shared {
    started: Instant,
    limit: Limit,
    tickets: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    done: AtomicBool,
}

impl Shared {
    /// Whether another iteration may start (bounded by duration or by count).
    fn next(&self) -> bool {
        match self.limit {
            Limit::Duration(d) => self.started.elapsed() < d,
            Limit::Requests(n) => self.tickets.fetch_add(1, Ordering::Relaxed) < n,
        }
    }
}

async fn drive(mut worker: Worker, scenario: Scenario, shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    while shared.next() {
        tally.requests += 1;
        if !worker.ready(scenario)
            && let Err(f) = worker.prepare(scenario).await
        {
            // Lost credentials that cannot be renewed: count it and back off a little.
            tally.failed(f);
            shared.errors.fetch_add(1, Ordering::Relaxed);
            shared.requests.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let start = Instant::now();
        match worker.iteration(scenario).await {
            Ok(()) => tally.samples.record(start.elapsed()),
            Err(f) => {
                tally.failed(f);
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.requests.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

fn progress_line(scenario: Scenario, shared: &Shared) -> String {
    format!(
        "\r{:<16} {:>6.1}s  requests {:>9}  errors {:>7}",
        scenario.name(),
        shared.started.elapsed().as_secs_f64(),
        shared.requests.load(Ordering::Relaxed),
        shared.errors.load(Ordering::Relaxed)
    )
}

async fn run_scenario(
    options: &Options,
    target: &Arc<Target>,
    fixture: &Arc<Fixture>,
    scenario: Scenario,
) -> ScenarioReport {
    let name = scenario.name();
    let connections = options.connections.name();
    let not_run = |reason: String| {
        ScenarioReport::not_run(
            name,
            options.concurrency,
            connections,
            scenario.http_requests(),
            reason,
        )
    };
    // Prepare every worker (not measured): sessions, refresh chains, access tokens.
    // One after the other: setup is not what is measured, and it keeps the server's
    // write path quiet until the run starts.
    let mut workers = Vec::new();
    for index in 0..options.concurrency {
        let mut worker = match Worker::new(index, target.clone(), fixture.clone()) {
            Ok(w) => w,
            Err(e) => return not_run(e),
        };
        if let Err(f) = worker.prepare(scenario).await {
            return not_run(format!("{}: {}", f.kind, f.detail));
        }
        workers.push(worker);
    }

    let shared = Arc::new(Shared {
        started: Instant::now(),
        limit: options.limit,
        tickets: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    let progress = options.progress.then(|| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.tick().await;
            while !shared.done.load(Ordering::Relaxed) {
                tick.tick().await;
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "{}", progress_line(scenario, &shared));
                let _ = err.flush();
            }
        })
    });
    let mut running = tokio::task::JoinSet::new();
    for worker in workers {
        running.spawn(drive(worker, scenario, shared.clone()));
    }
    let mut tally = Tally::default();
    let mut lost = 0;
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(t) => tally.merge(t),
            Err(_) => lost += 1,
        }
    }
    let elapsed = shared.started.elapsed().as_secs_f64();
    shared.done.store(true, Ordering::Relaxed);
    if let Some(task) = progress {
        task.abort();
        let line = progress_line(scenario, &shared);
        eprintln!("{line}  done");
    }

    let errors: u64 = tally.errors.values().map(|(n, _)| n).sum();
    let ok = tally.samples.len() as u64;
    let mut error_kinds: Vec<ErrorKind> = tally
        .errors
        .into_iter()
        .map(|(kind, (count, example))| ErrorKind {
            kind,
            count,
            example,
        })
        .collect();
    if lost > 0 {
        error_kinds.push(ErrorKind {
            kind: "worker panicked".into(),
            count: lost,
            example: String::new(),
        });
    }
    error_kinds.sort_by_key(|e| std::cmp::Reverse(e.count));
    let mut report = ScenarioReport {
        setup_error: None,
        requests: tally.requests,
        errors,
        elapsed_s: elapsed,
        requests_per_s: if elapsed > 0.0 {
            ok as f64 / elapsed
        } else {
            0.0
        },
        error_kinds,
        ..not_run(String::new())
    };
    report.set_latencies(tally.samples.summary());
    report
}
