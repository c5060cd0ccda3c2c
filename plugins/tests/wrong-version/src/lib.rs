//! Built against `mgpass:plugin@0.2.0`, which this host does not speak.

wit_bindgen::generate!({
    inline: "
        package mgpass:plugin@0.2.0;
        interface hooks {
            init: func(config: string) -> result<string, string>;
        }
        world plugin {
            export hooks;
        }
    ",
    world: "plugin",
});

struct Future;

impl exports::mgpass::plugin::hooks::Guest for Future {
    fn init(_config: String) -> Result<String, String> {
        Ok(String::new())
    }
}

export!(Future);
