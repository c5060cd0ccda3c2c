//! Turning bytes into a linked plugin: interface checks (our package, a compatible
//! version, nothing else imported) and compiled components cached on disk.

use super::PluginError;
use super::capabilities::CallState;
use std::hash::{Hash, Hasher};
use std::path::Path;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

/// The interface this host implements; a plugin's must be semver-compatible with it.
pub const INTERFACE_PACKAGE: &str = "mgpass:plugin";
pub const INTERFACE_VERSION: &str = "0.1.0";

/// Largest component file accepted.
const MAX_COMPONENT_BYTES: usize = 32 << 20;

/// Compiles `bytes` (or loads the cached compilation) and checks its interface.
pub fn compile(
    engine: &Engine,
    name: &str,
    bytes: &[u8],
    cache_dir: &Path,
) -> Result<Component, PluginError> {
    let fail = |reason: String| PluginError::Load {
        plugin: name.to_string(),
        reason,
    };
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(fail(format!(
            "the file is {} bytes, over the {MAX_COMPONENT_BYTES}-byte cap",
            bytes.len()
        )));
    }
    let cached = cache_dir.join(cache_file_name(engine, bytes));
    let component = match load_cached(engine, &cached) {
        Some(component) => component,
        None => {
            let component = Component::new(engine, bytes)
                .map_err(|e| fail(format!("not a valid component: {e:#}")))?;
            store_cached(&component, &cached);
            component
        }
    };
    check_interface(engine, &component).map_err(fail)?;
    Ok(component)
}

/// Refuses a component built for another interface version or importing anything
/// but our capabilities, with a message naming what is wrong.
fn check_interface(engine: &Engine, component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    let mut hooks = false;
    for (name, _) in ty.exports(engine) {
        if let Some(version) = our_version(name)? {
            check_version(name, version)?;
            hooks |= name.starts_with(&format!("{INTERFACE_PACKAGE}/hooks@"));
        }
    }
    for (name, _) in ty.imports(engine) {
        match our_version(name)? {
            Some(version) => check_version(name, version)?,
            None => {
                return Err(format!(
                    "it imports {name}, which plugins are not granted (only {INTERFACE_PACKAGE} capabilities are)"
                ));
            }
        }
    }
    if !hooks {
        return Err(format!(
            "it does not export {INTERFACE_PACKAGE}/hooks@{INTERFACE_VERSION}"
        ));
    }
    Ok(())
}

/// The version of a `mgpass:plugin/…@X.Y.Z` name, None for any other name.
fn our_version(name: &str) -> Result<Option<&str>, String> {
    let Some(rest) = name
        .strip_prefix(INTERFACE_PACKAGE)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Ok(None);
    };
    match rest.split_once('@') {
        Some((_, version)) => Ok(Some(version)),
        None => Err(format!("{name} carries no interface version")),
    }
}

fn check_version(name: &str, version: &str) -> Result<(), String> {
    if compatible(version, INTERFACE_VERSION) {
        return Ok(());
    }
    Err(format!(
        "it was built for interface {INTERFACE_PACKAGE}@{version} ({name}), but this host \
         provides {INTERFACE_PACKAGE}@{INTERFACE_VERSION}; rebuild it against \
         {INTERFACE_VERSION}"
    ))
}

/// Semver compatibility as cargo sees it: same major, and for 0.x the same minor; a
/// plugin may not need a newer minor or patch than the host has.
fn compatible(plugin: &str, host: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let mut parts = v.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next()?.split(['-', '+']).next()?.parse().ok()?;
        Some((major, minor, patch))
    };
    let (Some(p), Some(h)) = (parse(plugin), parse(host)) else {
        return false;
    };
    let same_line = if h.0 == 0 {
        p.0 == 0 && p.1 == h.1
    } else {
        p.0 == h.0
    };
    same_line && p <= h
}

/// Keyed by the component's hash and the engine's compatibility hash (wasmtime version
/// and every setting that changes generated code).
fn cache_file_name(engine: &Engine, bytes: &[u8]) -> String {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    format!(
        "{}-{:016x}.cwasm",
        crate::crypto::sha256_hex(bytes),
        engine_hash.finish()
    )
}

fn load_cached(engine: &Engine, path: &Path) -> Option<Component> {
    let bytes = std::fs::read(path).ok()?;
    // SAFETY: the cache dir is ours (under data_dir) and the file name is the hash of
    // the component it was compiled from; wasmtime still checks the engine settings
    // and version recorded in the file and refuses a mismatch.
    match unsafe { Component::deserialize(engine, &bytes) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(path = %path.display(), "ignoring unusable compiled plugin: {e:#}");
            None
        }
    }
}

/// Best effort: a cache that cannot be written only costs a recompile next start.
fn store_cached(component: &Component, path: &Path) {
    let result = component
        .serialize()
        .map_err(|e| format!("{e:#}"))
        .and_then(|bytes| {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            // Write then rename, so a concurrent reader never sees half a file.
            let tmp = dir.join(format!(".{}.tmp", crate::crypto::random_id("c")));
            std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, path).map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), "cannot cache compiled plugin: {e}");
    }
}

/// The linker granting exactly the host capabilities.
pub fn linker(engine: &Engine) -> Result<Linker<CallState>, PluginError> {
    let mut linker = Linker::new(engine);
    super::bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
        &mut linker,
        |state: &mut CallState| state,
    )
    .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
    Ok(linker)
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn plugin_interface_versions_follow_semver() {
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(compatible("0.1.0", "0.1.3"));
        assert!(!compatible("0.1.4", "0.1.3"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(!compatible("1.0.0", "0.1.0"));
        assert!(compatible("1.0.0", "1.2.0"));
        assert!(!compatible("2.0.0", "1.2.0"));
        assert!(!compatible("x", "0.1.0"));
    }
}
