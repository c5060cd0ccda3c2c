//! Builds the guest plugins under `plugins/` for `wasm32-unknown-unknown` and turns each
//! core module into a component with `wit-component`, so the binary can embed them.
//!
//! The nested cargo gets its own target dir (sharing the outer one deadlocks on its
//! artifact lock) and an environment scrubbed of the outer build's `CARGO_*` variables
//! and rustflags (coverage or wrapper flags otherwise leak into the wasm build).

use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Guest crate folders under `plugins/`; each becomes `OUT_DIR/<name>.wasm`.
const GUESTS: &[&str] = &[
    "rewards",
    "examples/claims",
    "examples/role-gate",
    "tests/fixture",
    "tests/infinite-loop",
    "tests/big-alloc",
    "tests/trap-after-write",
    "tests/wasi-import",
    "tests/claims-override-sub",
    "tests/wrong-version",
];

fn main() {
    if let Err(e) = run() {
        panic!("building the guest plugins failed: {e}");
    }
}

fn run() -> Result<(), String> {
    let root = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let plugins = root.join("plugins");
    for watched in [
        "Cargo.toml",
        "Cargo.lock",
        "wit",
        "sdk",
        "rewards",
        "examples",
        "tests",
    ] {
        println!("cargo:rerun-if-changed=plugins/{watched}");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ensure_wasm_target(&root)?;

    let target_dir = root.join("target").join("plugin-guest");
    let mut build = Command::new(&cargo);
    build
        .current_dir(&plugins)
        .args(["build", "--release", "--workspace", "--target", WASM_TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    scrub_env(&mut build);
    let status = build
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!("guest build exited with {status}"));
    }

    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let artifacts = target_dir.join(WASM_TARGET).join("release");
    for guest in GUESTS {
        let name = guest.rsplit('/').next().unwrap_or(guest).replace('-', "_");
        let core = artifacts.join(format!("{name}.wasm"));
        let bytes =
            std::fs::read(&core).map_err(|e| format!("cannot read {}: {e}", core.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&bytes)
            .and_then(|enc| enc.validate(true).encode())
            .map_err(|e| format!("cannot componentize {}: {e:#}", core.display()))?;
        write_if_changed(&out_dir.join(format!("{name}.wasm")), &component)?;
    }
    Ok(())
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

/// Machines here set RUSTUP_AUTO_INSTALL=0, so a target named in rust-toolchain.toml
/// that is missing is skipped silently; install it rather than fail obscurely.
fn ensure_wasm_target(root: &Path) -> Result<(), String> {
    let listed = Command::new("rustup")
        .current_dir(root)
        .args(["target", "list", "--installed"])
        .output();
    let Ok(listed) = listed else {
        // No rustup: the toolchain was set up some other way; let cargo report problems.
        return Ok(());
    };
    let installed = String::from_utf8_lossy(&listed.stdout);
    if installed.lines().any(|l| l.trim() == WASM_TARGET) {
        return Ok(());
    }
    println!(
        "cargo:warning=installing the {WASM_TARGET} target for the plugin guests (rustup target add)"
    );
    let status = Command::new("rustup")
        .current_dir(root)
        .args(["target", "add", WASM_TARGET])
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`rustup target add {WASM_TARGET}` failed ({status}); install it by hand"
        ));
    }
    Ok(())
}

fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let leaks = key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_MAKEFLAGS";
        if leaks {
            cmd.env_remove(key);
        }
    }
    for key in [
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTDOCFLAGS",
    ] {
        cmd.env_remove(key);
    }
}

/// Leaves the file (and its mtime) alone when nothing changed, so include_bytes! users
/// are not rebuilt needlessly.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
