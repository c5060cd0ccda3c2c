//! Running one hook call: a fresh store from the plugin's pre-linked instance, limits
//! applied, output checked, writes committed in one transaction — or nothing applied.
//! A call whose reads went stale before it committed is rerun (optimistic concurrency);
//! the last rerun holds the commit gate alone, so a busy key cannot starve it.

use super::bindings::exports::mgpass::plugin::hooks::Guest;
use super::bindings::mgpass::plugin::types::{
    EventOutcome, LoginDecision, Partner, PartnerEvent, Principal, Request, Response, UserInfo,
};
use super::capabilities::CallState;
use super::limits::{EpochTicker, HostOptions};
use super::registry::{LoadedPlugin, Registry};
use super::{CallFailure, PluginError, REGISTERED_CLAIMS};
use crate::clock::SharedClock;
use crate::store::{CommitExtraFn, PluginCommit, PluginReads, PluginWrites, Store};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{Engine, Trap};

/// Longest message a plugin may show on the login page.
const MAX_DENY_MESSAGE: usize = 512;
const MAX_CLAIMS: usize = 64;
const MAX_HEADERS: usize = 32;
/// How many time budgets of store stalls a call may be credited.
const MAX_STORE_CREDIT: u32 = 10;

pub struct Inner {
    pub engine: Engine,
    pub linker: Linker<CallState>,
    pub store: Store,
    pub clock: SharedClock,
    pub options: HostOptions,
    pub in_flight: Arc<Semaphore>,
    /// Shared by every call attempt, held alone by a last rerun.
    pub commit_gate: RwLock<()>,
    pub cache_dir: PathBuf,
    pub registry: RwLock<Arc<Registry>>,
    pub reloading: std::sync::Mutex<()>,
    /// Told about every finished call (for metrics), once set.
    pub observer: std::sync::OnceLock<super::CallObserver>,
    /// Stops the epoch thread when the host goes away.
    pub _ticker: EpochTicker,
}

/// A hook's result and whether it wrote anything (to flush before acknowledging).
pub struct Output<R> {
    pub value: R,
    pub wrote: bool,
}

impl Inner {
    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Swaps in a new set of plugins; calls holding the old one finish on it.
    pub fn install(&self, registry: Registry) {
        *self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(registry);
    }

    /// Runs `invoke` against `plugin` until it commits, fails, or runs out of reruns.
    pub fn call<R>(
        &self,
        plugin: &LoadedPlugin,
        hook: &'static str,
        invoke: impl Fn(&Guest, &mut wasmtime::Store<CallState>) -> wasmtime::Result<Result<R, String>>,
        check: impl Fn(&R) -> Result<(), String>,
        extra: Option<&CommitExtraFn<R>>,
    ) -> Result<Output<R>, PluginError> {
        let name = plugin.meta.name.as_str();
        if let Err(retry_after_ms) = plugin.breaker.admit(self.clock.now_ms()) {
            return Err(PluginError::Unavailable {
                plugin: name.to_string(),
                retry_after_ms,
            });
        }
        let started = std::time::Instant::now();
        let result = self.attempts(plugin, hook, invoke, check, extra);
        if let Some(observe) = self.observer.get() {
            observe(name, hook, result.is_ok(), started.elapsed());
        }
        let plugin_fault = match &result {
            Ok(_) => false,
            Err(PluginError::Call { cause, .. }) => {
                !matches!(cause, CallFailure::Returned(_) | CallFailure::Conflict(_))
            }
            Err(_) => false,
        };
        plugin.breaker.record(!plugin_fault, self.clock.now_ms());
        if let Err(e) = &result {
            tracing::warn!(plugin = name, hook, "{e}");
        }
        result
    }

    fn attempts<R>(
        &self,
        plugin: &LoadedPlugin,
        hook: &'static str,
        invoke: impl Fn(&Guest, &mut wasmtime::Store<CallState>) -> wasmtime::Result<Result<R, String>>,
        check: impl Fn(&R) -> Result<(), String>,
        extra: Option<&CommitExtraFn<R>>,
    ) -> Result<Output<R>, PluginError> {
        let name = plugin.meta.name.as_str();
        let runs = self.options.max_reruns + 1;
        let failed = |cause: CallFailure| PluginError::Call {
            id: crate::crypto::random_id("perr_"),
            plugin: name.to_string(),
            hook,
            cause,
        };
        for run in 1..=runs {
            let last = run == runs && run > 1;
            let _shared = (!last).then(|| {
                self.commit_gate
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
            });
            let _alone = last.then(|| {
                self.commit_gate
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
            });

            let state = CallState::new(
                plugin.meta.clone(),
                self.store.clone(),
                self.clock.clone(),
                plugin.limits.memory_bytes,
            );
            let mut store = wasmtime::Store::new(&self.engine, state);
            store.limiter(|s| s.limiter());
            store
                .set_fuel(plugin.limits.fuel)
                .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
            let tick = self.options.epoch_tick;
            store.set_epoch_deadline(plugin.limits.deadline_ticks(tick));
            // At the deadline, time the call spent stalled in the store is added back
            // (at most MAX_STORE_CREDIT budgets' worth); otherwise it stops here.
            let mut credit_left = plugin.limits.time_budget * MAX_STORE_CREDIT;
            store.epoch_deadline_callback(move |mut ctx| {
                let waited = ctx.data_mut().take_store_wait().min(credit_left);
                credit_left -= waited;
                let ticks = (waited.as_micros() / tick.as_micros().max(1)) as u64;
                Ok(if ticks == 0 {
                    wasmtime::UpdateDeadline::Interrupt
                } else {
                    wasmtime::UpdateDeadline::Continue(ticks)
                })
            });

            let outcome = plugin
                .pre
                .instantiate(&mut store)
                .and_then(|instance| invoke(instance.mgpass_plugin_hooks(), &mut store));
            let reads = std::mem::take(&mut store.data_mut().reads);
            let writes = std::mem::take(&mut store.data_mut().writes);
            let cause = match outcome {
                Ok(Ok(value)) => {
                    if let Err(reason) = check(&value) {
                        return Err(failed(CallFailure::InvalidOutput(reason)));
                    }
                    if writes.is_empty() && extra.is_none() {
                        return Ok(Output {
                            value,
                            wrote: false,
                        });
                    }
                    match self
                        .store
                        .commit_plugin_call(name, &reads, &writes, &value, extra)?
                    {
                        PluginCommit::Applied => return Ok(Output { value, wrote: true }),
                        PluginCommit::Conflict => continue,
                    }
                }
                Ok(Err(message)) => CallFailure::Returned(message),
                Err(e) => classify(&e, store.data(), plugin),
            };
            // A failure computed from reads that have since changed may not recur.
            let rerun = matches!(cause, CallFailure::Returned(_) | CallFailure::Trap(_))
                && run < runs
                && !self.store.plugin_reads_current(name, &reads)?;
            if !rerun {
                return Err(failed(cause));
            }
        }
        Err(failed(CallFailure::Conflict(runs)))
    }

    pub fn handle_request(
        &self,
        plugin: &LoadedPlugin,
        principal: &Principal,
        request: &Request,
    ) -> Result<Output<Response>, PluginError> {
        let max = self.options.max_response_bytes;
        self.call(
            plugin,
            "handle-request",
            |hooks, store| hooks.call_handle_request(store, principal, request),
            |response| check_response(response, max),
            None,
        )
    }

    pub fn on_partner_event(
        &self,
        plugin: Option<&Arc<LoadedPlugin>>,
        event: &PartnerEvent,
        partner: &Partner,
        record: Option<&CommitExtraFn<EventOutcome>>,
    ) -> Result<Output<EventOutcome>, PluginError> {
        let Some(plugin) = plugin else {
            let outcome = EventOutcome { points_awarded: 0 };
            if let Some(record) = record {
                let nothing = (PluginReads::default(), PluginWrites::default());
                self.store.commit_plugin_call(
                    "",
                    &nothing.0,
                    &nothing.1,
                    &outcome,
                    Some(record),
                )?;
            }
            return Ok(Output {
                value: outcome,
                wrote: record.is_some(),
            });
        };
        self.call(
            plugin,
            "on-partner-event",
            |hooks, store| hooks.call_on_partner_event(store, event, partner),
            |_| Ok(()),
            record,
        )
    }

    pub fn token_claims(
        &self,
        plugins: &[Arc<LoadedPlugin>],
        user: &UserInfo,
        client_id: &str,
        scopes: &[String],
    ) -> Result<Output<Vec<(String, serde_json::Value)>>, PluginError> {
        let mut claims: Vec<(String, serde_json::Value)> = Vec::new();
        let mut wrote = false;
        for plugin in plugins {
            let max = self.options.max_response_bytes;
            let out = self.call(
                plugin,
                "token-claims",
                |hooks, store| hooks.call_token_claims(store, user, client_id, scopes),
                |list| check_claims(list, max),
                None,
            )?;
            wrote |= out.wrote;
            for (name, value) in out.value {
                if claims.iter().any(|(n, _)| *n == name) {
                    return Err(PluginError::Call {
                        id: crate::crypto::random_id("perr_"),
                        plugin: plugin.meta.name.clone(),
                        hook: "token-claims",
                        cause: CallFailure::InvalidOutput(format!(
                            "claim {name:?} is already set by another plugin"
                        )),
                    });
                }
                // check_claims parsed every value already.
                let value = serde_json::from_str(&value).unwrap_or(serde_json::Value::Null);
                claims.push((name, value));
            }
        }
        Ok(Output {
            value: claims,
            wrote,
        })
    }

    pub fn authorize_login(
        &self,
        plugins: &[Arc<LoadedPlugin>],
        user: &UserInfo,
        client_id: &str,
    ) -> Result<Output<LoginDecision>, PluginError> {
        let mut wrote = false;
        for plugin in plugins {
            let out = self.call(
                plugin,
                "authorize-login",
                |hooks, store| hooks.call_authorize_login(store, user, client_id),
                |decision| match decision {
                    LoginDecision::Deny(m) if m.len() > MAX_DENY_MESSAGE => {
                        Err(format!("deny message over {MAX_DENY_MESSAGE} bytes"))
                    }
                    _ => Ok(()),
                },
                None,
            )?;
            wrote |= out.wrote;
            if let LoginDecision::Deny(_) = out.value {
                return Ok(Output {
                    value: out.value,
                    wrote,
                });
            }
        }
        Ok(Output {
            value: LoginDecision::Allow,
            wrote,
        })
    }
}

/// Names what stopped a call, preferring what the host knows over the bare trap.
fn classify(error: &wasmtime::Error, state: &CallState, plugin: &LoadedPlugin) -> CallFailure {
    if let Some(reason) = &state.host_failure {
        return CallFailure::Host(reason.clone());
    }
    if state.memory_denied() {
        return CallFailure::MemoryLimit((plugin.limits.memory_bytes >> 20) as u64);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallFailure::OutOfFuel,
        Some(Trap::Interrupt) => CallFailure::Timeout(plugin.limits.time_budget.as_millis() as u64),
        Some(Trap::UnreachableCodeReached) => {
            CallFailure::Trap("unreachable code reached (a panic in the plugin)".into())
        }
        Some(trap) => CallFailure::Trap(trap.to_string()),
        None => CallFailure::Trap(format!("{error:#}")),
    }
}

fn check_response(response: &Response, max_bytes: usize) -> Result<(), String> {
    if !(100..=599).contains(&response.status) {
        return Err(format!("status {} is not an HTTP status", response.status));
    }
    if response.body.len() > max_bytes {
        return Err(format!("response body over {max_bytes} bytes"));
    }
    if serde_json::from_str::<serde::de::IgnoredAny>(&response.body).is_err() {
        return Err("response body is not JSON".into());
    }
    if response.headers.len() > MAX_HEADERS {
        return Err(format!("more than {MAX_HEADERS} headers"));
    }
    for (name, value) in &response.headers {
        let lower = name.to_ascii_lowercase();
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("header {name:?} is malformed"));
        }
        // Framing and cookies are the host's: a plugin must not smuggle a session.
        if [
            "content-length",
            "transfer-encoding",
            "connection",
            "set-cookie",
            "content-type",
        ]
        .contains(&lower.as_str())
        {
            return Err(format!("header {name:?} is set by the host only"));
        }
    }
    Ok(())
}

fn check_claims(claims: &[(String, String)], max_bytes: usize) -> Result<(), String> {
    if claims.len() > MAX_CLAIMS {
        return Err(format!("more than {MAX_CLAIMS} claims"));
    }
    let size: usize = claims.iter().map(|(n, v)| n.len() + v.len()).sum();
    if size > max_bytes {
        return Err(format!("claims over {max_bytes} bytes"));
    }
    for (i, (name, value)) in claims.iter().enumerate() {
        if REGISTERED_CLAIMS.contains(&name.as_str()) {
            return Err(format!("claim {name:?} is registered and set by the host"));
        }
        if !name.contains(':') || name.starts_with(':') || name.ends_with(':') {
            return Err(format!(
                "claim {name:?} is not namespaced (use \"yourplugin:name\" or a URL)"
            ));
        }
        if claims[..i].iter().any(|(n, _)| n == name) {
            return Err(format!("claim {name:?} appears twice"));
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(value).is_err() {
            return Err(format!("claim {name:?} has a value that is not JSON"));
        }
    }
    Ok(())
}
