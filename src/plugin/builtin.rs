//! Plugins embedded in the binary, built from `plugins/` by build.rs.

/// A plugin the binary ships; an operator's file of the same name replaces it.
pub struct Builtin {
    pub name: &'static str,
    pub bytes: &'static [u8],
    /// Examples load only when their `[plugins.NAME]` section exists.
    pub default_enabled: bool,
}

macro_rules! guest {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $file, ".wasm"))
    };
}

pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "rewards",
        bytes: guest!("rewards"),
        default_enabled: true,
    },
    Builtin {
        name: "example-claims",
        bytes: guest!("claims"),
        default_enabled: false,
    },
    Builtin {
        name: "example-role-gate",
        bytes: guest!("role_gate"),
        default_enabled: false,
    },
];

/// Components for tests and benchmarks (`plugins/tests/*`).
#[doc(hidden)]
pub mod testdata {
    /// Well-behaved: every hook and capability; config `version` shows in its answers.
    pub const FIXTURE: &[u8] = guest!("fixture");
    #[cfg(test)]
    pub const INFINITE_LOOP: &[u8] = guest!("infinite_loop");
    #[cfg(test)]
    pub const BIG_ALLOC: &[u8] = guest!("big_alloc");
    #[cfg(test)]
    pub const TRAP_AFTER_WRITE: &[u8] = guest!("trap_after_write");
    #[cfg(test)]
    pub const WASI_IMPORT: &[u8] = guest!("wasi_import");
    #[cfg(test)]
    pub const CLAIMS_OVERRIDE_SUB: &[u8] = guest!("claims_override_sub");
    #[cfg(test)]
    pub const WRONG_VERSION: &[u8] = guest!("wrong_version");
}
