//! The WebAssembly plugin host.
//!
//! Plugins are components speaking the WIT interface in `plugins/wit/`. Each call runs
//! in a fresh store from a pre-linked instance under a fuel budget, a wall-clock
//! deadline and a memory cap; what it writes is buffered and committed in one store
//! transaction only when it returns `ok` (see `call`). The server builds one
//! [`PluginHost`] and calls one method per hook.
//!
//! Modules: `limits` (options, engine, epoch ticker), `loader` (interface checks and
//! the compiled-component cache), `capabilities` (the imports), `call` (running,
//! rerunning and committing a call), `breaker`, `registry` (loading and routes).

mod bindings;
mod breaker;
mod builtin;
mod call;
mod capabilities;
mod limits;
mod loader;
mod registry;
#[cfg(test)]
mod tests;

pub use bindings::mgpass::plugin::types::{
    EventOutcome, LoginDecision, Partner, PartnerEvent, Principal, PrincipalKind, Request,
    Response, Route,
};
pub use builtin::testdata;
pub use limits::{HostOptions, PluginLimits};
pub use loader::{INTERFACE_PACKAGE, INTERFACE_VERSION};
pub use registry::{PluginState, PluginStatus, RouteMatch};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::store::{CommitExtraFn, Store, StoreError, User};
use crate::types::{ClientId, Scopes};
use registry::Registry;
use std::sync::{Arc, RwLock};
use tokio::sync::Semaphore;

/// Claims the token endpoint sets; a plugin may never override them.
pub const REGISTERED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "nonce",
    "auth_time",
    "sid",
    "at_hash",
    "azp",
    "scope",
    "client_id",
    "acr",
    "amr",
    "typ",
];

/// Why a plugin call did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallFailure {
    #[error("ran past its {0} ms time budget")]
    Timeout(u64),
    #[error("used up its fuel (CPU budget)")]
    OutOfFuel,
    #[error("tried to grow memory past its {0} MiB cap")]
    MemoryLimit(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("a host capability failed: {0}")]
    Host(String),
    #[error("returned an error: {0}")]
    Returned(String),
    #[error("returned something the host refuses: {0}")]
    InvalidOutput(String),
    #[error("kept conflicting with concurrent calls; gave up after {0} runs")]
    Conflict(u32),
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin engine: {0}")]
    Engine(String),
    #[error("plugin {plugin}: cannot load: {reason}")]
    Load { plugin: String, reason: String },
    #[error("plugin {plugin}: [plugins.{plugin}] {key}: {reason}")]
    Config {
        plugin: String,
        key: String,
        reason: String,
    },
    #[error("plugins are overloaded: no call slot freed up in time")]
    Overloaded,
    #[error("plugin {plugin} is paused after repeated failures; retry in {retry_after_ms} ms")]
    Unavailable { plugin: String, retry_after_ms: i64 },
    #[error("the {what} is {size} bytes, over the {limit}-byte cap")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("plugin {plugin} call {hook} failed [{id}]: {cause}")]
    Call {
        /// Quoted in the response so an operator can find the log line.
        id: String,
        plugin: String,
        hook: &'static str,
        cause: CallFailure,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl PluginError {
    /// The HTTP status a request failing with this error should get.
    pub fn http_status(&self) -> u16 {
        match self {
            PluginError::Overloaded | PluginError::Unavailable { .. } => 503,
            PluginError::TooLarge { .. } => 413,
            PluginError::Call { cause, .. } => match cause {
                CallFailure::Timeout(_) | CallFailure::OutOfFuel | CallFailure::Conflict(_) => 503,
                _ => 502,
            },
            PluginError::Store(StoreError::Rejected(_)) => 409,
            _ => 500,
        }
    }

    /// The error id to quote in a response, for calls that ran.
    pub fn error_id(&self) -> Option<&str> {
        match self {
            PluginError::Call { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// Extra writes committed with a partner event's plugin writes (see
/// [`PluginHost::on_partner_event`]).
pub type EventRecorder = CommitExtraFn<EventOutcome>;

/// Told of every finished plugin call: plugin name, hook, success, time taken.
pub type CallObserver = Arc<dyn Fn(&str, &'static str, bool, std::time::Duration) + Send + Sync>;

/// The plugin host; cheap to clone.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<call::Inner>,
}

impl PluginHost {
    /// Loads the built-in plugins and `config.plugins_dir/*.wasm` with default options.
    /// A plugin that fails to load is reported (see [`PluginHost::list`]) and skipped.
    pub fn load(
        config: &Config,
        store: Store,
        clock: SharedClock,
    ) -> Result<PluginHost, PluginError> {
        PluginHost::load_with(config, store, clock, HostOptions::default())
    }

    pub fn load_with(
        config: &Config,
        store: Store,
        clock: SharedClock,
        options: HostOptions,
    ) -> Result<PluginHost, PluginError> {
        let engine = limits::engine(&options)?;
        let inner = Arc::new(call::Inner {
            linker: loader::linker(&engine)?,
            _ticker: limits::EpochTicker::start(&engine, options.epoch_tick)?,
            engine,
            store,
            clock,
            in_flight: Arc::new(Semaphore::new(options.max_in_flight as usize)),
            commit_gate: RwLock::new(()),
            cache_dir: options
                .cache_dir
                .clone()
                .or_else(|| config.plugin_cache_dir.clone())
                .unwrap_or_else(|| config.data_dir.join("plugin-cache")),
            registry: RwLock::new(Arc::new(Registry::default())),
            reloading: std::sync::Mutex::new(()),
            observer: std::sync::OnceLock::new(),
            options,
        });
        let registry = Registry::build(&inner, config);
        inner.install(registry);
        Ok(PluginHost { inner })
    }

    /// Loads every plugin again (files, built-ins, config). Each new version takes calls
    /// only once it loaded and its `init` succeeded; calls in flight finish on the old.
    /// A plugin that fails to load now is reported and left out.
    pub async fn reload(&self, config: &Config) -> Result<Vec<PluginStatus>, PluginError> {
        let inner = self.inner.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            // One reload at a time, so two cannot interleave their swaps.
            let _one = inner.reloading.lock().unwrap_or_else(|p| p.into_inner());
            let registry = Registry::build(&inner, &config);
            inner.install(registry);
        })
        .await
        .map_err(|e| PluginError::Engine(format!("reload panicked: {e}")))?;
        Ok(self.list())
    }

    /// Registers the observer of every call (the server's metrics); only the first
    /// registration counts.
    pub fn observe(&self, observer: CallObserver) {
        let _ = self.inner.observer.set(observer);
    }

    /// Every plugin found at the last (re)load, with its state.
    pub fn list(&self) -> Vec<PluginStatus> {
        self.inner.registry().status(self.inner.clock.now_ms())
    }

    /// Every route the loaded plugins mount.
    pub fn routes(&self) -> Vec<RouteMatch> {
        self.inner.registry().routes()
    }

    /// The plugin route for `method` and `path`, with its path parameters, so the
    /// caller can authenticate the principal it declares before calling it.
    pub fn find_route(&self, method: &str, path: &str) -> Option<RouteMatch> {
        self.inner.registry().find_route(method, path)
    }

    /// Runs a route's handler. Its writes are durable before this returns.
    pub async fn handle_request(
        &self,
        route: &RouteMatch,
        principal: Principal,
        mut request: Request,
    ) -> Result<Response, PluginError> {
        let limit = self.inner.options.max_request_bytes;
        if request.body.len() > limit {
            return Err(PluginError::TooLarge {
                what: "request body",
                size: request.body.len(),
                limit,
            });
        }
        request.path_params = route.params.clone();
        // The version that matched, even if a reload swapped it since.
        let plugin = route.loaded.clone();
        self.run(move |inner| inner.handle_request(&plugin, &principal, &request))
            .await
    }

    /// Hands a partner event to the plugin that registered for events. `record`, if
    /// given, adds writes (e.g. the idempotency record) to the same transaction as the
    /// plugin's; it sees the outcome and may reject, which aborts everything. With no
    /// plugin registered the event awards nothing and `record` still commits.
    pub async fn on_partner_event(
        &self,
        event: PartnerEvent,
        partner: Partner,
        record: Option<EventRecorder>,
    ) -> Result<EventOutcome, PluginError> {
        if event.metadata.len() > 64 << 10 {
            return Err(PluginError::TooLarge {
                what: "event metadata",
                size: event.metadata.len(),
                limit: 64 << 10,
            });
        }
        let plugin = self.inner.registry().partner_event_handler();
        self.run(move |inner| {
            inner.on_partner_event(plugin.as_ref(), &event, &partner, record.as_ref())
        })
        .await
    }

    /// Extra claims from every plugin that registered for them, for a token issued to
    /// `user` by `client_id` with `scopes`.
    pub async fn token_claims(
        &self,
        user: &User,
        client_id: &ClientId,
        scopes: &Scopes,
    ) -> Result<Vec<(String, serde_json::Value)>, PluginError> {
        let plugins = self.inner.registry().with_hook(|r| r.token_claims);
        if plugins.is_empty() {
            return Ok(Vec::new());
        }
        let user = capabilities::user_info(user);
        let client = client_id.to_string();
        let scopes: Vec<String> = scopes.iter().map(str::to_string).collect();
        self.run(move |inner| inner.token_claims(&plugins, &user, &client, &scopes))
            .await
    }

    /// Whether `user` may log in to `client_id`: the first plugin that denies wins.
    pub async fn authorize_login(
        &self,
        user: &User,
        client_id: &ClientId,
    ) -> Result<LoginDecision, PluginError> {
        let plugins = self.inner.registry().with_hook(|r| r.authorize_login);
        if plugins.is_empty() {
            return Ok(LoginDecision::Allow);
        }
        let user = capabilities::user_info(user);
        let client = client_id.to_string();
        self.run(move |inner| inner.authorize_login(&plugins, &user, &client))
            .await
    }

    /// Runs `f` once a call slot is free and makes its writes durable before returning.
    ///
    /// The call runs on this thread inside `block_in_place`, so other tasks move to
    /// another worker while it runs (up to its time budget). Measured with
    /// `benches/plugin_call.rs`: `block_in_place`, `spawn_blocking` and running inline
    /// cost the same per trivial call (~30 µs on 2 shared cores); this one needs no
    /// `'static` copies of the call's inputs.
    async fn run<R: Send>(
        &self,
        f: impl FnOnce(&call::Inner) -> Result<call::Output<R>, PluginError> + Send,
    ) -> Result<R, PluginError> {
        let slot = tokio::time::timeout(
            self.inner.options.queue_wait,
            self.inner.in_flight.clone().acquire_owned(),
        )
        .await
        .map_err(|_| PluginError::Overloaded)?
        .map_err(|_| PluginError::Overloaded)?;
        let work = move || {
            let output = f(&self.inner);
            // The slot bounds running instances; the flush below needs none.
            drop(slot);
            let output = output?;
            // A blocking flush on this thread rather than `flush_async`: concurrent
            // `flush_async` calls alongside transactions deadlock sled 0.34 (its
            // issue #1308: they fill sled's own thread pool), seen in the
            // concurrent-debit test. Concurrent flushes still share fsyncs.
            if output.wrote {
                self.inner.store.flush_blocking()?;
            }
            Ok(output.value)
        };
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => work(),
            _ => tokio::task::block_in_place(work),
        }
    }
}
