//! Host bindings generated from `plugins/wit`.

wasmtime::component::bindgen!({
    path: "plugins/wit",
    world: "plugin",
    // A host capability that fails (store I/O, a cap exceeded) traps the call, so it
    // applies nothing.
    imports: { default: trappable },
});
