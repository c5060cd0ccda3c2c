//! The mgpass plugin SDK: implement [`Plugin`] for your type, overriding only the hooks
//! you need, and call [`register_plugin!`] once.
//!
//! Every call runs in a fresh instance, so a plugin keeps no state between calls: the
//! SDK builds your type with [`Plugin::new`] from the plugin's config at the start of
//! each call. Durable state goes in [`kv`] or the [`ledger`].

// The generated bindings name paths through the crate name, as plugins see them.
extern crate self as mgpass_plugin_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "mgpass_plugin_sdk::bindings",
        runtime_path: "mgpass_plugin_sdk::__wit_bindgen::rt",
    });
}

pub use bindings::mgpass::plugin::types::*;
/// Host capabilities: `host::{log, now, lookup_user, emit_webhook, config}`.
pub use bindings::mgpass::plugin::{host, kv, ledger};

impl Default for Registration {
    /// Registers nothing; set the fields you need with struct update syntax.
    fn default() -> Self {
        Registration {
            routes: Vec::new(),
            partner_events: false,
            token_claims: false,
            authorize_login: false,
        }
    }
}

/// A plugin. Every method but [`Plugin::new`] has a default that does nothing.
pub trait Plugin: Sized {
    /// Builds the plugin from its `[plugins.NAME]` config table, given as JSON text.
    fn new(config: &str) -> Result<Self, String>;

    /// The routes and hooks to register; the default registers nothing.
    fn registration(&self) -> Registration {
        Registration::default()
    }

    fn on_partner_event(
        &mut self,
        _event: PartnerEvent,
        _partner: Partner,
    ) -> Result<EventOutcome, String> {
        Ok(EventOutcome { points_awarded: 0 })
    }

    fn handle_request(
        &mut self,
        _principal: Principal,
        _request: Request,
    ) -> Result<Response, String> {
        Ok(json_response(404, r#"{"error":"not_found"}"#))
    }

    /// Extra token claims as (namespaced name, JSON value).
    fn token_claims(
        &mut self,
        _user: UserInfo,
        _client_id: String,
        _scopes: Vec<String>,
    ) -> Result<Vec<(String, String)>, String> {
        Ok(Vec::new())
    }

    fn authorize_login(
        &mut self,
        _user: UserInfo,
        _client_id: String,
    ) -> Result<LoginDecision, String> {
        Ok(LoginDecision::Allow)
    }
}

/// A response with a JSON body and no extra headers.
pub fn json_response(status: u16, body: impl Into<String>) -> Response {
    Response {
        status,
        body: body.into(),
        headers: Vec::new(),
    }
}

/// Logs at info level through the host.
pub fn log_info(message: &str) {
    host::log(LogLevel::Info, message);
}

/// Builds the plugin for one call from the config the host holds.
#[doc(hidden)]
pub fn __with<T: Plugin, R>(f: impl FnOnce(&mut T) -> Result<R, String>) -> Result<R, String> {
    let mut plugin = T::new(&host::config())?;
    f(&mut plugin)
}

/// Exports `$plugin` (a type implementing [`Plugin`]) as this component's hooks.
#[macro_export]
macro_rules! register_plugin {
    ($plugin:ty) => {
        struct __MgpassPluginExports;

        impl $crate::bindings::exports::mgpass::plugin::hooks::Guest for __MgpassPluginExports {
            fn init(config: String) -> Result<$crate::Registration, String> {
                <$plugin as $crate::Plugin>::new(&config).map(|p| $crate::Plugin::registration(&p))
            }
            fn on_partner_event(
                event: $crate::PartnerEvent,
                partner: $crate::Partner,
            ) -> Result<$crate::EventOutcome, String> {
                $crate::__with(|p: &mut $plugin| {
                    $crate::Plugin::on_partner_event(p, event, partner)
                })
            }
            fn handle_request(
                principal: $crate::Principal,
                request: $crate::Request,
            ) -> Result<$crate::Response, String> {
                $crate::__with(|p: &mut $plugin| {
                    $crate::Plugin::handle_request(p, principal, request)
                })
            }
            fn token_claims(
                user: $crate::UserInfo,
                client_id: String,
                scopes: Vec<String>,
            ) -> Result<Vec<(String, String)>, String> {
                $crate::__with(|p: &mut $plugin| {
                    $crate::Plugin::token_claims(p, user, client_id, scopes)
                })
            }
            fn authorize_login(
                user: $crate::UserInfo,
                client_id: String,
            ) -> Result<$crate::LoginDecision, String> {
                $crate::__with(|p: &mut $plugin| {
                    $crate::Plugin::authorize_login(p, user, client_id)
                })
            }
        }

        $crate::bindings::__export_plugin!(__MgpassPluginExports);
    };
}
