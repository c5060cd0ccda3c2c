//! Foundation: discovery, JWKS, HTTPS-only, restart, key rotation, config errors, CLI.

use crate::support::*;
use mgpass::clock::Clock;
use openidconnect::IssuerUrl;
use openidconnect::core::CoreProviderMetadata;
use serde_json::Value;
use std::io::{Read, Write};
use std::process::Command as Proc;

#[tokio::test]
async fn discovery_is_valid_for_an_oidc_relying_party() {
    let server = TestServer::start().await;
    let http = oidc_http(server.http());
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(server.base.clone()).unwrap(), &http)
            .await
            .expect("openidconnect accepts our discovery document and JWKS");
    assert_eq!(metadata.issuer().as_str(), server.base);
    assert_eq!(metadata.jwks().keys().len(), 2);
    let raw: Value = server
        .http()
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        raw["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(raw["backchannel_logout_supported"], true);
    assert_eq!(raw["token_endpoint"], server.url("/api/token"));
}

#[tokio::test]
async fn jwks_has_ec_and_rsa_public_keys_only() {
    let server = TestServer::start().await;
    let resp = server
        .http()
        .get(server.url("/jwks.json"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let jwks: Value = resp.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    let ec = keys.iter().find(|k| k["kty"] == "EC").expect("EC key");
    assert_eq!(
        (ec["crv"].as_str(), ec["alg"].as_str(), ec["use"].as_str()),
        (Some("P-256"), Some("ES256"), Some("sig"))
    );
    let rsa = keys.iter().find(|k| k["kty"] == "RSA").expect("RSA key");
    assert_eq!(rsa["alg"], "RS256");
    for k in keys {
        assert!(
            k.get("d").is_none() && k.get("p").is_none(),
            "no private parts: {k}"
        );
        assert!(k["kid"].as_str().is_some_and(|s| s.len() == 43));
    }
    // The keys are usable: a token signed by the server verifies with the published key.
    let token = server
        .app()
        .keys
        .sign(
            &serde_json::json!({"x": 1}),
            "JWT",
            mgpass::keys::Alg::ES256,
            server.clock.now_ms() / 1000,
        )
        .unwrap();
    let jwk = josekit::jwk::Jwk::from_map(ec.as_object().unwrap().clone()).unwrap();
    let verifier = josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap();
    josekit::jws::deserialize_compact(&token, &verifier).expect("verifies with the JWKS key");
}

#[tokio::test]
async fn plain_http_is_refused_with_400() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("HTTPS is required"), "{answer}");
    assert!(!answer.contains("issuer"), "never reaches a handler");
}

#[tokio::test]
async fn restart_keeps_keys_certificate_and_data() {
    let mut server = TestServer::start().await;
    server.add_client(ClientSpec::confidential("keep")).await;
    let jwks_before = server.app().keys.jwks(0);
    let cert_before = std::fs::read(&server.cert_path).unwrap();
    server.restart().await;
    assert_eq!(server.app().keys.jwks(0), jwks_before);
    assert_eq!(std::fs::read(&server.cert_path).unwrap(), cert_before);
    let shown = server
        .admin(mgpass::admin::Command::ClientShow { id: "keep".into() })
        .await
        .expect("client survived the restart");
    assert_eq!(shown["id"], "keep");
    // And the restarted server serves over the same certificate.
    let resp = server
        .http()
        .get(server.url("/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn keys_rotate_publishes_first_and_signs_later() {
    let server = TestServer::start().await;
    let rotated = server
        .admin(mgpass::admin::Command::KeysRotate { now: false })
        .await
        .unwrap();
    assert_eq!(rotated["state"], "next");
    let new_kid = rotated["kid"].as_str().unwrap().to_string();
    let jwks: Value = server
        .http()
        .get(server.url("/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == new_kid.as_str()),
        "published at once"
    );
    let kid_of = |server: &TestServer| {
        let t = server
            .app()
            .keys
            .sign(
                &serde_json::json!({}),
                "JWT",
                mgpass::keys::Alg::ES256,
                server.clock.now_ms() / 1000,
            )
            .unwrap();
        josekit::jwt::decode_header(&t)
            .unwrap()
            .claim("kid")
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_ne!(kid_of(&server), new_kid, "not signing yet");
    server.clock.advance_secs(3601);
    assert_eq!(kid_of(&server), new_kid, "signs after the activation delay");
    let listed = server
        .admin(mgpass::admin::Command::KeysList)
        .await
        .unwrap();
    let states: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["alg"] == "ES256")
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"active") && states.contains(&"retiring"),
        "{states:?}"
    );
}

fn mgpass_bin() -> Proc {
    let mut p = Proc::new(env!("CARGO_BIN_EXE_mgpass"));
    p.env_remove("MGPASS_CONFIG").env("RUST_LOG", "warn");
    p
}

#[test]
fn bad_config_stops_startup_with_a_named_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("isuer = \"https://x\"\n", "isuer"),
        ("listen = \"not an address\"\n", "listen"),
        ("issuer = \"http://plain.example\"\n", "issuer"),
        (
            "[tokens]\naccess_token_ttl = \"ten minutes\"\n",
            "access_token_ttl",
        ),
        ("[tokens]\nrefresh_grace = \"5m\"\n", "refresh_grace"),
        ("[tls]\ncert = \"only-cert.pem\"\n", "tls"),
        ("[session]\nlifetime = \"0s\"\n", "session.lifetime"),
    ];
    for (text, named) in cases {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let out = mgpass_bin()
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(named),
            "{text}: message should name {named}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = mgpass_bin()
        .args(["serve", "--config", "/nonexistent/mgpass.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/mgpass.toml"));
    // Unreadable TLS files are named too.
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "data_dir = \"d\"\nkeys_dir = \"k\"\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"missing-cert.pem\"\nkey = \"missing-key.pem\"\n").unwrap();
    let out = mgpass_bin()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing-cert.pem"));
}

/// Runs `mgpass --json --config CONFIG args…` and returns (exit code, stdout JSON or
/// text, stderr).
fn cli(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = mgpass_bin();
    cmd.arg("--config").arg(config).arg("--json").args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_suite(config: &std::path::Path, tag: &str) {
    let client = format!("app-{tag}");
    let (code, out, err) = cli(
        config,
        &[
            "client",
            "add",
            "--id",
            &client,
            "--generate-secret",
            "--redirect-uri",
            "https://app.example/cb",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["id"], client.as_str());
    assert_eq!(v["client_secret"].as_str().map(str::len), Some(43));
    // Duplicates, relative and plain-http redirect URIs: exit 2, nothing written.
    for bad in [
        vec![
            "client",
            "add",
            "--id",
            &client,
            "--public",
            "--redirect-uri",
            "https://a.example/cb",
        ],
        vec![
            "client",
            "add",
            "--id",
            "rel",
            "--public",
            "--redirect-uri",
            "/cb",
        ],
        vec![
            "client",
            "add",
            "--id",
            "plain",
            "--public",
            "--redirect-uri",
            "http://app.example/cb",
        ],
    ] {
        let (code, _, err) = cli(config, &bad, None);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(!err.is_empty());
    }
    let (_, out, _) = cli(config, &["client", "list"], None);
    let list: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&"rel") && !ids.contains(&"plain"), "{ids:?}");
    assert!(
        !out.contains("secret_digest"),
        "digests never leave the store"
    );

    let user = format!("user{tag}");
    let (code, out, err) = cli(
        config,
        &[
            "user",
            "add",
            "--username",
            &user,
            "--email",
            &format!("{user}@example.com"),
            "--role",
            "mgpass:admin",
            "--password-stdin",
        ],
        Some("s3cret-pass\n"),
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("usr_"));
    assert!(!out.contains("argon2"), "no password digest in output");
    let (code, _, _) = cli(
        config,
        &["user", "add", "--username", "empty", "--password-stdin"],
        Some("\n"),
    );
    assert_eq!(code, 2, "empty password refused");
    let (code, _, _) = cli(
        config,
        &["user", "add", "--username", &user, "--password", "x"],
        None,
    );
    assert_eq!(code, 2, "duplicate username refused");
    let (code, out, _) = cli(
        config,
        &["user", "revoke-role", &user, "mgpass:admin"],
        None,
    );
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["roles"],
        serde_json::json!([])
    );
    let (code, out, _) = cli(
        config,
        &["user", "show", &format!("{user}@example.com")],
        None,
    );
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["username"],
        user.as_str()
    );
    let (code, _, _) = cli(
        config,
        &["user", "set-password", &user, "--password", "another-pass"],
        None,
    );
    assert_eq!(code, 0);
    let (code, _, _) = cli(config, &["client", "remove", &client], None);
    assert_eq!(code, 0);
    let (code, _, _) = cli(config, &["client", "show", &client], None);
    assert_eq!(code, 2);
    let (code, out, _) = cli(config, &["keys", "list"], None);
    assert_eq!(code, 0);
    assert!(out.contains("active"));
}

/// A server process on a free port with its own folder; killed on drop.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub config: std::path::PathBuf,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl ServerProcess {
    pub fn spawn() -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!("issuer = \"https://localhost:{port}\"\nlisten = \"127.0.0.1:{port}\"\n[login]\nargon2_memory_kib = 64\nargon2_iterations = 1\n"),
        )
        .unwrap();
        let mut p = ServerProcess {
            child: mgpass_bin()
                .arg("--config")
                .arg(&config)
                .arg("serve")
                .spawn()
                .unwrap(),
            config,
            dir,
            port,
        };
        p.wait_ready();
        p
    }

    pub fn wait_ready(&mut self) {
        let socket = self.dir.path().join("data/admin.sock");
        for _ in 0..200 {
            if socket.exists() && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited early: {status}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("server did not become ready");
    }

    /// SIGTERM, and the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        unsafe_kill(self.child.id(), "TERM");
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Proc::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

#[test]
fn cli_works_with_the_server_running_and_stopped() {
    let mut server = ServerProcess::spawn();
    cli_suite(&server.config, "running");
    // The running server really holds what the CLI wrote over the socket.
    let (code, out, _) = cli(&server.config, &["user", "list"], None);
    assert_eq!(code, 0);
    assert!(out.contains("userrunning"));
    assert_eq!(server.terminate(), Some(0), "SIGTERM exits 0");
    assert!(
        !server.dir.path().join("data/admin.sock").exists(),
        "socket removed"
    );
    cli_suite(&server.config, "stopped");
    let (_, out, _) = cli(&server.config, &["user", "list"], None);
    assert!(
        out.contains("userrunning") && out.contains("userstopped"),
        "both paths wrote the same store"
    );
    let mode = std::fs::metadata(server.dir.path().join("keys"))
        .map(|_| ())
        .is_ok();
    assert!(mode);
}

#[test]
fn admin_socket_and_private_keys_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let server = ServerProcess::spawn();
    let sock = std::fs::metadata(server.dir.path().join("data/admin.sock")).unwrap();
    assert_eq!(sock.permissions().mode() & 0o777, 0o600);
    for entry in std::fs::read_dir(server.dir.path().join("keys")).unwrap() {
        let entry = entry.unwrap();
        if entry.path().extension().is_some_and(|e| e == "pem") {
            assert_eq!(
                entry.metadata().unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
    let tls_key = std::fs::metadata(server.dir.path().join("data/tls-key.pem")).unwrap();
    assert_eq!(tls_key.permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn http1_and_http2_are_both_served() {
    let server = TestServer::start().await;
    for builder in [
        client_builder(&server.cert_path, server.addr).http1_only(),
        client_builder(&server.cert_path, server.addr),
    ] {
        let resp = builder
            .build()
            .unwrap()
            .get(server.url("/jwks.json"))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), 200, "{:?}", resp.version());
    }
}
