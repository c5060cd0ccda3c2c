//! The set of loaded plugins: which exist (built-in and `plugins_dir/*.wasm`), which
//! loaded, which hooks and routes each registered. Built whole and swapped in at once.

use super::bindings::PluginPre;
use super::bindings::mgpass::plugin::types::{PrincipalKind, Registration};
use super::breaker::Breaker;
use super::builtin::BUILTINS;
use super::call::Inner;
use super::capabilities::{CallState, PluginMeta};
use super::limits::PluginLimits;
use super::{PluginError, loader};
use crate::config::Config;
use std::collections::BTreeMap;
use std::sync::Arc;

const MAX_ROUTES: usize = 64;
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// One plugin version, ready to call.
pub struct LoadedPlugin {
    pub meta: Arc<PluginMeta>,
    pub limits: PluginLimits,
    pub pre: PluginPre<CallState>,
    pub registration: Registration,
    pub breaker: Breaker,
    pub source: String,
}

/// Where a plugin stands after the last (re)load.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginState {
    Loaded {
        hooks: Vec<&'static str>,
        routes: usize,
        /// Set while the breaker keeps the plugin paused.
        paused_for_ms: Option<i64>,
    },
    Disabled,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PluginStatus {
    pub name: String,
    /// "built-in" or the file it came from.
    pub source: String,
    pub state: PluginState,
}

/// A route a plugin mounts, matched against a request when `params` is filled.
#[derive(Clone)]
pub struct RouteMatch {
    pub plugin: String,
    pub method: String,
    pub pattern: String,
    pub principal: PrincipalKind,
    /// Captured `{name}` segments, in order.
    pub params: Vec<(String, String)>,
    /// The plugin version that matched: the call runs on it even if a reload follows.
    pub(super) loaded: Arc<LoadedPlugin>,
}

impl std::fmt::Debug for RouteMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMatch")
            .field("plugin", &self.plugin)
            .field("method", &self.method)
            .field("pattern", &self.pattern)
            .field("principal", &self.principal)
            .field("params", &self.params)
            .finish()
    }
}

#[derive(Default)]
pub struct Registry {
    plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    others: BTreeMap<String, PluginStatus>,
    routes: Vec<RouteMatch>,
}

struct Candidate {
    name: String,
    source: String,
    bytes: Result<Vec<u8>, String>,
    default_enabled: bool,
}

impl Registry {
    /// Loads every plugin the config names or the folder holds; failures are recorded,
    /// never fatal.
    pub fn build(inner: &Inner, config: &Config) -> Registry {
        let mut registry = Registry::default();
        for candidate in candidates(config) {
            let name = candidate.name.clone();
            let source = candidate.source.clone();
            let state = match registry.load_one(inner, config, candidate) {
                Ok(None) => PluginState::Disabled,
                Ok(Some(())) => continue,
                Err(e) => {
                    tracing::error!(plugin = %name, "{e}");
                    PluginState::Failed(e.to_string())
                }
            };
            registry.others.insert(
                name.clone(),
                PluginStatus {
                    name,
                    source,
                    state,
                },
            );
        }
        for name in config.plugins.keys() {
            if !registry.plugins.contains_key(name) && !registry.others.contains_key(name) {
                tracing::warn!(plugin = %name, "[plugins.{name}] configures a plugin that does not exist");
            }
        }
        registry
    }

    fn load_one(
        &mut self,
        inner: &Inner,
        config: &Config,
        candidate: Candidate,
    ) -> Result<Option<()>, PluginError> {
        let name = candidate.name;
        let fail = |reason: String| PluginError::Load {
            plugin: name.clone(),
            reason,
        };
        let table = config.plugins.get(&name);
        let (limits, plugin_table) =
            PluginLimits::parse(&name, table.unwrap_or(&toml::Table::new()), &inner.options)?;
        let enabled = limits
            .enabled
            .unwrap_or(candidate.default_enabled || table.is_some());
        if !enabled {
            return Ok(None);
        }
        let bytes = candidate.bytes.map_err(&fail)?;
        let component = loader::compile(&inner.engine, &name, &bytes, &inner.cache_dir)?;
        let pre = inner
            .linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
            .map_err(|e| fail(format!("cannot link: {e:#}")))?;
        let config_json = serde_json::to_string(&plugin_table)
            .map_err(|e| fail(format!("config is not representable as JSON: {e}")))?;
        let mut plugin = LoadedPlugin {
            meta: Arc::new(PluginMeta {
                name: name.clone(),
                config_json: config_json.clone(),
            }),
            limits,
            pre,
            registration: Registration {
                routes: Vec::new(),
                partner_events: false,
                token_claims: false,
                authorize_login: false,
            },
            breaker: Breaker::new(
                inner.options.breaker_threshold,
                inner.options.breaker_cooldown.as_millis() as i64,
            ),
            source: candidate.source,
        };
        let registration = inner
            .call(
                &plugin,
                "init",
                |hooks, store| hooks.call_init(store, &config_json),
                check_registration,
                None,
            )
            .map_err(|e| fail(format!("init failed: {e}")))?
            .value;
        plugin.registration = registration;
        let plugin = Arc::new(plugin);
        if plugin.registration.partner_events
            && let Some(other) = self.partner_event_handler()
        {
            return Err(fail(format!(
                "partner events are already handled by plugin {}",
                other.meta.name
            )));
        }
        let mut routes = Vec::new();
        for route in &plugin.registration.routes {
            let method = route.method.to_ascii_uppercase();
            if let Some(taken) = self
                .routes
                .iter()
                .find(|r| r.method == method && same_shape(&r.pattern, &route.path))
            {
                return Err(fail(format!(
                    "route {method} {} is already mounted by plugin {}",
                    route.path, taken.plugin
                )));
            }
            routes.push(RouteMatch {
                plugin: name.clone(),
                method,
                pattern: route.path.clone(),
                principal: route.principal,
                params: Vec::new(),
                loaded: plugin.clone(),
            });
        }
        self.routes.extend(routes);
        self.plugins.insert(name, plugin);
        Ok(Some(()))
    }

    pub fn status(&self, now_ms: i64) -> Vec<PluginStatus> {
        let mut all: Vec<PluginStatus> = self.others.values().cloned().collect();
        for (name, plugin) in &self.plugins {
            let r = &plugin.registration;
            let hooks = [
                (r.partner_events, "on-partner-event"),
                (!r.routes.is_empty(), "handle-request"),
                (r.token_claims, "token-claims"),
                (r.authorize_login, "authorize-login"),
            ]
            .into_iter()
            .filter_map(|(on, hook)| on.then_some(hook))
            .collect();
            all.push(PluginStatus {
                name: name.clone(),
                source: plugin.source.clone(),
                state: PluginState::Loaded {
                    hooks,
                    routes: r.routes.len(),
                    paused_for_ms: plugin.breaker.open_for(now_ms),
                },
            });
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn routes(&self) -> Vec<RouteMatch> {
        self.routes.clone()
    }

    /// The matching route with the most literal segments (so `/x/new` beats `/x/{id}`).
    pub fn find_route(&self, method: &str, path: &str) -> Option<RouteMatch> {
        let method = method.to_ascii_uppercase();
        self.routes
            .iter()
            .filter(|r| r.method == method)
            .filter_map(|r| {
                let params = match_path(&r.pattern, path)?;
                let literals = r.pattern.split('/').count() - params.len();
                Some((
                    literals,
                    RouteMatch {
                        params,
                        ..r.clone()
                    },
                ))
            })
            .max_by_key(|(literals, _)| *literals)
            .map(|(_, r)| r)
    }

    pub fn partner_event_handler(&self) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .values()
            .find(|p| p.registration.partner_events)
            .cloned()
    }

    /// Plugins with a hook, in name order.
    pub fn with_hook(&self, wants: impl Fn(&Registration) -> bool) -> Vec<Arc<LoadedPlugin>> {
        self.plugins
            .values()
            .filter(|p| wants(&p.registration))
            .cloned()
            .collect()
    }
}

/// Built-ins, replaced by same-named files in `plugins_dir`, in name order.
fn candidates(config: &Config) -> Vec<Candidate> {
    let mut found: BTreeMap<String, Candidate> = BUILTINS
        .iter()
        .map(|b| {
            let candidate = Candidate {
                name: b.name.to_string(),
                source: "built-in".into(),
                bytes: Ok(b.bytes.to_vec()),
                default_enabled: b.default_enabled,
            };
            (b.name.to_string(), candidate)
        })
        .collect();
    let entries = match std::fs::read_dir(&config.plugins_dir) {
        Ok(entries) => entries.flatten().collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::error!(dir = %config.plugins_dir.display(), "cannot list plugins: {e}");
            Vec::new()
        }
    };
    for entry in entries {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let bytes = if valid_name(stem) {
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        } else {
            Err("plugin names are 1-64 of a-z, 0-9, '-' and '_'".into())
        };
        let candidate = Candidate {
            name: stem.to_string(),
            source: path.display().to_string(),
            bytes,
            default_enabled: true,
        };
        found.insert(stem.to_string(), candidate);
    }
    found.into_values().collect()
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn check_registration(r: &Registration) -> Result<(), String> {
    if r.routes.len() > MAX_ROUTES {
        return Err(format!("more than {MAX_ROUTES} routes"));
    }
    for route in &r.routes {
        let method = route.method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(format!(
                "route method {:?} is not one of {METHODS:?}",
                route.method
            ));
        }
        let path = &route.path;
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let well_formed = path.starts_with("/api/")
            && path.len() <= 256
            && segments.len() >= 2
            && segments.iter().all(|s| {
                let param = s.len() > 2 && s.starts_with('{') && s.ends_with('}');
                let literal = !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
                param || literal
            });
        if !well_formed {
            return Err(format!(
                "route path {path:?} must be under /api/ with literal or {{name}} segments"
            ));
        }
    }
    Ok(())
}

/// Two patterns match the same paths when they differ only in parameter names.
fn same_shape(a: &str, b: &str) -> bool {
    let shape = |p: &str| -> Vec<String> {
        p.split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "{}".into()
                } else {
                    s.to_string()
                }
            })
            .collect()
    };
    shape(a) == shape(b)
}

/// The captured parameters when `path` matches `pattern`.
fn match_path(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
    let (mut pattern_parts, mut path_parts) = (pattern.split('/'), path.split('/'));
    let mut params = Vec::new();
    loop {
        match (pattern_parts.next(), path_parts.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(s)) if p.starts_with('{') && p.ends_with('}') => {
                if s.is_empty() {
                    return None;
                }
                params.push((p[1..p.len() - 1].to_string(), s.to_string()));
            }
            (Some(p), Some(s)) if p == s => {}
            _ => return None,
        }
    }
}
