//! Never returns: pure computation in `handle-request` (fuel or the epoch deadline must
//! stop it), host calls in a loop in `token-claims` (only the wall-clock deadline can,
//! since fuel does not count time spent in the host).

use mgpass_plugin_sdk::*;
use std::hint::black_box;

struct Spin;

impl Plugin for Spin {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Spin)
    }

    fn registration(&self) -> Registration {
        Registration {
            routes: vec![Route {
                method: "GET".into(),
                path: "/api/spin".into(),
                principal: PrincipalKind::User,
            }],
            token_claims: true,
            ..Registration::default()
        }
    }

    fn handle_request(&mut self, _p: Principal, _r: Request) -> Result<Response, String> {
        let mut n: u64 = 0;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    }

    fn token_claims(
        &mut self,
        _user: UserInfo,
        _client_id: String,
        _scopes: Vec<String>,
    ) -> Result<Vec<(String, String)>, String> {
        loop {
            black_box(host::now());
        }
    }
}

register_plugin!(Spin);
