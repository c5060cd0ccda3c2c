//! Limits: host-wide options, per-plugin limits parsed from `[plugins.NAME]`, the
//! engine (pooling allocator sized from the options) and the epoch ticker that turns
//! wall-clock time into interruption deadlines.

use super::PluginError;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Host-wide settings; the defaults suit a small server.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Plugin calls running at once; also sizes the instance pool.
    pub max_in_flight: u32,
    /// How long a call waits for a free slot before failing as overloaded.
    pub queue_wait: Duration,
    /// The largest `memory_mib` any plugin may ask for (sizes pool slots).
    pub max_memory_mib: u64,
    /// Resolution of wall-clock deadlines.
    pub epoch_tick: Duration,
    /// Consecutive failed calls that open a plugin's breaker...
    pub breaker_threshold: u32,
    /// ...for this long.
    pub breaker_cooldown: Duration,
    /// Reruns of a call whose reads went stale before it could commit.
    pub max_reruns: u32,
    /// Cap on a request body handed to a plugin.
    pub max_request_bytes: usize,
    /// Cap on a response body, claims set or other output a plugin returns.
    pub max_response_bytes: usize,
    /// A plugin's wall-clock budget per call unless its `time_budget_ms` says otherwise.
    pub default_time_budget: Duration,
    /// Where compiled plugins are cached; `data_dir/plugin-cache` when None.
    pub cache_dir: Option<PathBuf>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            // Calls are CPU-bound and their deadline is wall-clock: running more at
            // once than there are cores only time-slices them into timeouts (seen at
            // 32 on 2 cores); the rest queue for `queue_wait`.
            max_in_flight: std::thread::available_parallelism()
                .map_or(2, |n| n.get() as u32)
                .saturating_mul(2),
            queue_wait: Duration::from_millis(200),
            max_memory_mib: 256,
            epoch_tick: Duration::from_millis(1),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            max_reruns: 5,
            max_request_bytes: 1 << 20,
            max_response_bytes: 1 << 20,
            default_time_budget: Duration::from_millis(50),
            cache_dir: None,
        }
    }
}

/// One plugin's limits, from its config table.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginLimits {
    pub enabled: Option<bool>,
    /// Wall-clock budget of one call (epoch deadline), host calls included.
    pub time_budget: Duration,
    /// CPU budget of one call in fuel units (about one per wasm instruction).
    pub fuel: u64,
    pub memory_bytes: usize,
}

/// Keys the host reads from `[plugins.NAME]`; the rest goes to the plugin's `init`.
const HOST_KEYS: &[&str] = &["enabled", "time_budget_ms", "fuel", "memory_mib"];

impl PluginLimits {
    /// Splits a plugin's config table into its limits and the table the plugin sees.
    pub fn parse(
        plugin: &str,
        table: &toml::Table,
        options: &HostOptions,
    ) -> Result<(PluginLimits, toml::Table), PluginError> {
        let bad = |key: &str, reason: String| PluginError::Config {
            plugin: plugin.to_string(),
            key: key.to_string(),
            reason,
        };
        let int = |key: &str, min: i64, max: i64| -> Result<Option<i64>, PluginError> {
            match table.get(key) {
                None => Ok(None),
                Some(toml::Value::Integer(n)) if (min..=max).contains(n) => Ok(Some(*n)),
                Some(v) => Err(bad(
                    key,
                    format!("must be an integer from {min} to {max}, not {v}"),
                )),
            }
        };
        let enabled = match table.get("enabled") {
            None => None,
            Some(toml::Value::Boolean(b)) => Some(*b),
            Some(v) => return Err(bad("enabled", format!("must be true or false, not {v}"))),
        };
        let time_budget_ms = int("time_budget_ms", 1, 60_000)?
            .map_or(options.default_time_budget.as_millis() as u64, |n| n as u64);
        // Default fuel: about what a wasm loop burns in the time budget, so neither
        // limit is far looser than the other.
        let fuel = int("fuel", 1_000, i64::MAX)?.map_or(time_budget_ms * 2_000_000, |n| n as u64);
        let memory_mib = int("memory_mib", 1, options.max_memory_mib as i64)?.unwrap_or(32) as u64;
        let rest = table
            .iter()
            .filter(|(k, _)| !HOST_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let limits = PluginLimits {
            enabled,
            time_budget: Duration::from_millis(time_budget_ms),
            fuel,
            memory_bytes: (memory_mib << 20) as usize,
        };
        Ok((limits, rest))
    }

    /// Epoch ticks until the deadline, rounded up, plus one because the current tick
    /// may be nearly over.
    pub fn deadline_ticks(&self, tick: Duration) -> u64 {
        let tick = tick.as_micros().max(1);
        (self.time_budget.as_micros().div_ceil(tick) as u64) + 1
    }
}

/// How much of each pooled memory and table stays mapped between calls.
const KEEP_RESIDENT: usize = 2 << 20;

/// Builds the engine: fuel and epochs on, pooled instances sized for the in-flight cap.
pub fn engine(options: &HostOptions) -> Result<Engine, PluginError> {
    // Room for calls in flight plus the init calls of a reload running beside them.
    let slots = options.max_in_flight + 4;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        // A wit-component component is the plugin's module plus small shim modules.
        .total_core_instances(slots * 4)
        .max_core_instances_per_component(8)
        .total_memories(slots)
        .max_memories_per_component(2)
        .total_tables(slots * 4)
        .max_tables_per_component(8)
        .max_memory_size((options.max_memory_mib << 20) as usize)
        // Reset a slot's first pages with memset rather than madvise: a fresh store per
        // call otherwise unmaps and refaults them each time, and the unmapping costs a
        // TLB shootdown on every core (seen in the partner-events profile).
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    let mut config = wasmtime::Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))
}

/// Advances the engine's epoch every tick until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub fn start(engine: &Engine, tick: Duration) -> Result<EpochTicker, PluginError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
