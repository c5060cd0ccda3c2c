//! The shared application state every handler receives, built once at start-up.

use crate::clock::SharedClock;
use crate::config::Config;
use crate::keys::KeyRing;
use crate::session::password::Passwords;
use crate::session::throttle::LoginThrottle;
use crate::store::Store;
use std::sync::Arc;

pub struct App {
    pub config: Config,
    pub store: Store,
    pub keys: KeyRing,
    pub clock: SharedClock,
    pub passwords: Passwords,
    pub throttle: LoginThrottle,
    pub pending: crate::oidc::PendingRequests,
    /// Wakes the outbox worker when something was queued.
    pub outbox_wake: tokio::sync::Notify,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub rate_limits: crate::partner::ratelimit::RateLimiter,
    pub plugins: crate::plugin::PluginHost,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

impl App {
    /// Opens the store and keys under the configured folders.
    pub fn open(config: Config, clock: SharedClock) -> Result<Arc<App>, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StartError(format!(
                "cannot create data_dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let store =
            Store::open(&config.data_dir.join("db")).map_err(|e| StartError(e.to_string()))?;
        let max_ttl = config
            .tokens
            .access_token_ttl
            .max(config.tokens.id_token_ttl)
            .as_secs() as i64
            + crate::oidc::LOGOUT_TOKEN_TTL;
        let keys = KeyRing::open(&config.keys_dir, max_ttl, clock.now())
            .map_err(|e| StartError(e.to_string()))?;
        let passwords = Passwords::new(&config.login).map_err(StartError)?;
        let throttle = LoginThrottle::new(
            clock.clone(),
            config.login.free_failures,
            config.login.max_backoff,
        );
        let plugins = crate::plugin::PluginHost::load(&config, store.clone(), clock.clone())
            .map_err(|e| StartError(e.to_string()))?;
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let observed = metrics.clone();
        plugins.observe(Arc::new(move |plugin, hook, ok, took| {
            observed.plugin_call(plugin, hook, ok, took.as_secs_f64())
        }));
        for status in plugins.list() {
            tracing::info!(plugin = %status.name, source = %status.source, state = ?status.state, "plugin");
        }
        let rate_limits = crate::partner::ratelimit::RateLimiter::new(
            clock.clone(),
            config.rate_limits.partner_per_minute,
            config.rate_limits.api_per_minute,
        );
        Ok(Arc::new(App {
            rate_limits,
            plugins,
            pending: crate::oidc::PendingRequests::new(clock.clone()),
            config,
            store,
            keys,
            clock,
            passwords,
            throttle,
            outbox_wake: tokio::sync::Notify::new(),
            metrics,
        }))
    }
}
