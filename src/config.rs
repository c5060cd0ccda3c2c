//! Typed configuration: `config.toml` with every key optional (defaults below), unknown
//! keys refused, relative paths resolved against the file's folder.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("invalid config file {path}: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The issuer URL: `iss` of every token and the base of every endpoint.
    pub issuer: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub keys_dir: PathBuf,
    pub plugins_dir: PathBuf,
    /// Where compiled plugins are cached; `data_dir/plugin-cache` when absent.
    pub plugin_cache_dir: Option<PathBuf>,
    /// Where Prometheus metrics are served (plain HTTP, loopback only); off when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    pub tls: TlsConfig,
    pub session: SessionConfig,
    pub tokens: TokenConfig,
    pub keys: KeysConfig,
    pub login: LoginConfig,
    pub logout: LogoutConfig,
    pub shutdown: ShutdownConfig,
    pub rate_limits: RateLimitConfig,
    pub webhooks: WebhookConfig,
    /// One table per plugin, `[plugins.NAME]`, handed to that plugin's `init`.
    pub plugins: BTreeMap<String, toml::Table>,
    /// The file this was read from, so a plugin reload can read it again.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// `Domain` attribute of the session cookie; host-only when absent.
    pub cookie_domain: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub id_token_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub code_ttl: Duration,
    /// How long a just-rotated refresh token may be presented once more by a concurrent
    /// request without revoking its family. Off by default; at most 60 s.
    #[serde(with = "humantime_serde")]
    pub refresh_grace: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// How long a key added by `keys rotate` is published before it signs.
    #[serde(with = "humantime_serde")]
    pub activation_delay: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// Argon2id memory cost in KiB.
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Failures allowed before backoff starts, per account and per client IP.
    pub free_failures: u32,
    /// The longest backoff an account can be put under.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogoutConfig {
    #[serde(with = "humantime_serde")]
    pub backchannel_timeout: Duration,
    /// Undelivered back-channel logouts are given up after this long.
    #[serde(with = "humantime_serde")]
    pub backchannel_max_age: Duration,
    /// First retry delay; doubled per attempt, with jitter.
    #[serde(with = "humantime_serde")]
    pub backchannel_retry_base: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per minute per client IP to `/api/partner/*`.
    pub partner_per_minute: u32,
    /// Requests per minute per client IP to every other `/api/*` path.
    pub api_per_minute: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Timeout of one delivery attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// An endpoint that has failed for this long is disabled.
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long in-flight requests may run after SIGINT/SIGTERM.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            issuer: "https://localhost:8443".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            data_dir: "./data".into(),
            keys_dir: "./keys".into(),
            plugins_dir: "./plugins".into(),
            plugin_cache_dir: None,
            metrics_listen: None,
            trusted_proxies: Vec::new(),
            tls: TlsConfig::default(),
            session: SessionConfig::default(),
            tokens: TokenConfig::default(),
            keys: KeysConfig::default(),
            login: LoginConfig::default(),
            logout: LogoutConfig::default(),
            shutdown: ShutdownConfig::default(),
            rate_limits: RateLimitConfig::default(),
            webhooks: WebhookConfig::default(),
            plugins: BTreeMap::new(),
            source: None,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            lifetime: Duration::from_secs(30 * 24 * 3600),
            cookie_domain: None,
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            access_token_ttl: Duration::from_secs(600),
            id_token_ttl: Duration::from_secs(600),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            code_ttl: Duration::from_secs(60),
            refresh_grace: Duration::ZERO,
        }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            activation_delay: Duration::from_secs(3600),
        }
    }
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            free_failures: 5,
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl Default for LogoutConfig {
    fn default() -> Self {
        LogoutConfig {
            backchannel_timeout: Duration::from_secs(5),
            backchannel_max_age: Duration::from_secs(24 * 3600),
            backchannel_retry_base: Duration::from_secs(5),
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            partner_per_minute: 30,
            api_per_minute: 100,
        }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            timeout: Duration::from_secs(10),
            disable_after: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Loads `path`. A missing file is an error only when `explicit`; otherwise the
    /// embedded defaults apply, relative to the current folder.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(ConfigError::Unreadable {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut config = Config::parse(&text, base).map_err(|reason| ConfigError::Invalid {
            path: path.display().to_string(),
            reason,
        })?;
        config.source = path.exists().then(|| path.to_path_buf());
        Ok(config)
    }

    /// Parses config text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let mut config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.data_dir);
        resolve(&mut self.keys_dir);
        resolve(&mut self.plugins_dir);
        if let Some(p) = &mut self.plugin_cache_dir {
            resolve(p);
        }
        if let Some(p) = &mut self.tls.cert {
            resolve(p);
        }
        if let Some(p) = &mut self.tls.key {
            resolve(p);
        }
    }

    fn validate(&self) -> Result<(), String> {
        let issuer = url::Url::parse(&self.issuer)
            .map_err(|e| format!("issuer: {:?} is not a URL: {e}", self.issuer))?;
        if issuer.scheme() != "https" {
            return Err(format!("issuer: {:?} must use https", self.issuer));
        }
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err("issuer: must not have a query or fragment".into());
        }
        if issuer.host_str().is_none() {
            return Err("issuer: has no host".into());
        }
        if let Some(addr) = self.metrics_listen
            && !addr.ip().is_loopback()
        {
            return Err(format!("metrics_listen: {addr} is not a loopback address"));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err("tls: set both cert and key, or neither".into());
        }
        if self.tokens.refresh_grace > Duration::from_secs(60) {
            return Err("tokens.refresh_grace: at most 60s".into());
        }
        for (name, d) in [
            ("session.lifetime", self.session.lifetime),
            ("tokens.access_token_ttl", self.tokens.access_token_ttl),
            ("tokens.id_token_ttl", self.tokens.id_token_ttl),
            ("tokens.refresh_token_ttl", self.tokens.refresh_token_ttl),
            ("tokens.code_ttl", self.tokens.code_ttl),
        ] {
            if d.is_zero() {
                return Err(format!("{name}: must be longer than zero"));
            }
        }
        if self.rate_limits.partner_per_minute == 0 || self.rate_limits.api_per_minute == 0 {
            return Err("rate_limits: limits must be at least 1 per minute".into());
        }
        if self.login.argon2_iterations == 0 || self.login.argon2_parallelism == 0 {
            return Err("login: argon2 iterations and parallelism must be at least 1".into());
        }
        if let Some(domain) = &self.session.cookie_domain
            && (domain.is_empty() || domain.contains([';', ' ', ',']))
        {
            return Err(format!("session.cookie_domain: {domain:?} is not a domain"));
        }
        Ok(())
    }

    /// The issuer without a trailing slash, to build endpoint URLs from.
    pub fn issuer_base(&self) -> &str {
        self.issuer.trim_end_matches('/')
    }

    /// The host name in the issuer, for the self-signed certificate.
    pub fn issuer_host(&self) -> String {
        url::Url::parse(&self.issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "localhost".into())
    }

    pub fn admin_socket_path(&self) -> PathBuf {
        self.data_dir.join("admin.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", Path::new("/etc/mgpass")).unwrap();
        assert_eq!(c.issuer, "https://localhost:8443");
        assert_eq!(c.data_dir, Path::new("/etc/mgpass/./data"));
        assert_eq!(c.session.lifetime, Duration::from_secs(2_592_000));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("isuer = \"https://x\"", Path::new(".")).unwrap_err();
        assert!(e.contains("isuer"), "{e}");
        let e = Config::parse("[session]\nlifetim = \"1d\"", Path::new(".")).unwrap_err();
        assert!(e.contains("lifetim"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::parse("listen = \"nowhere\"", Path::new(".")).unwrap_err();
        assert!(e.contains("listen"), "{e}");
        let e = Config::parse("issuer = \"http://x\"", Path::new(".")).unwrap_err();
        assert!(e.contains("issuer"), "{e}");
        let e = Config::parse("[tokens]\nrefresh_grace = \"2m\"", Path::new(".")).unwrap_err();
        assert!(e.contains("refresh_grace"), "{e}");
        let e = Config::parse("[tls]\ncert = \"c.pem\"", Path::new(".")).unwrap_err();
        assert!(e.contains("tls"), "{e}");
    }

    #[test]
    fn missing_file_is_an_error_only_when_explicit() {
        let p = Path::new("/nonexistent/mgpass.toml");
        assert!(Config::load(p, false).is_ok());
        let e = Config::load(p, true).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/mgpass.toml"), "{e}");
    }
}
