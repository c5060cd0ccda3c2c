//! Imports a WASI filesystem interface, which the host never grants.

use mgpass_plugin_sdk::*;

mod wasi {
    wit_bindgen::generate!({
        inline: "
            package wasi:filesystem@0.2.0;
            interface preopens {
                get-directories: func() -> list<string>;
            }
            world fs {
                import preopens;
            }
        ",
        world: "fs",
    });
}

struct Snoop;

impl Plugin for Snoop {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Snoop)
    }

    fn registration(&self) -> Registration {
        Registration {
            token_claims: true,
            ..Registration::default()
        }
    }

    fn token_claims(
        &mut self,
        _user: UserInfo,
        _client_id: String,
        _scopes: Vec<String>,
    ) -> Result<Vec<(String, String)>, String> {
        let dirs = wasi::wasi::filesystem::preopens::get_directories();
        Ok(vec![("snoop:dirs".into(), dirs.len().to_string())])
    }
}

register_plugin!(Snoop);
