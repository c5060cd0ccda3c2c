//! The thin glue between the SDK (WIT types and host imports) and [`crate::service`].

use mgpass_plugin_sdk as sdk;
use sdk::{Plugin, PrincipalKind, Registration, Route, register_plugin};

use crate::config::Config;
use crate::host::{
    Caller, CallerKind, Entry, Event, Host, HttpRequest, Kind, LedgerError, Level, Meta, Page,
    PartnerInfo,
};
use crate::service::Rewards;

/// The host imports, behind [`Host`].
struct WasmHost;

fn to_kind(k: sdk::EntryKind) -> Kind {
    match k {
        sdk::EntryKind::Earn => Kind::Earn,
        sdk::EntryKind::Redeem => Kind::Redeem,
        sdk::EntryKind::Refund => Kind::Refund,
        sdk::EntryKind::Adjust => Kind::Adjust,
    }
}

fn to_meta(m: Meta) -> sdk::EntryMeta {
    sdk::EntryMeta {
        kind: match m.kind {
            Kind::Earn => sdk::EntryKind::Earn,
            Kind::Redeem => sdk::EntryKind::Redeem,
            Kind::Refund => sdk::EntryKind::Refund,
            Kind::Adjust => sdk::EntryKind::Adjust,
        },
        partner: m.partner,
        event_type: m.event_type,
        reference: m.reference,
        note: m.note,
    }
}

fn to_entry(e: sdk::LedgerEntry) -> Entry {
    Entry {
        id: e.id,
        seq: e.seq,
        kind: to_kind(e.kind),
        points: e.points,
        balance_after: e.balance_after,
        partner: e.partner,
        event_type: e.event_type,
        reference: e.reference,
        note: e.note,
        time: e.time,
    }
}

fn to_ledger_result(r: Result<sdk::LedgerEntry, sdk::LedgerError>) -> Result<Entry, LedgerError> {
    r.map(to_entry).map_err(|e| match e {
        sdk::LedgerError::InsufficientPoints(b) => LedgerError::Insufficient(b),
        sdk::LedgerError::InvalidAmount(p) => LedgerError::InvalidAmount(p),
        sdk::LedgerError::UnknownUser(u) => LedgerError::UnknownUser(u),
    })
}

impl Host for WasmHost {
    fn now(&mut self) -> i64 {
        sdk::host::now()
    }
    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Info => sdk::LogLevel::Info,
            Level::Warn => sdk::LogLevel::Warn,
            Level::Error => sdk::LogLevel::Error,
        };
        sdk::host::log(level, message);
    }
    fn user_exists(&mut self, id: &str) -> bool {
        sdk::host::lookup_user(id).is_some()
    }
    fn kv_get(&mut self, key: &str) -> Option<String> {
        sdk::kv::get(key)
    }
    fn kv_put(&mut self, key: &str, value: &str) -> Result<(), String> {
        sdk::kv::put(key, value)
    }
    fn kv_delete(&mut self, key: &str) {
        sdk::kv::delete(key)
    }
    fn kv_scan(&mut self, prefix: &str, limit: u32) -> Vec<(String, String)> {
        sdk::kv::scan_prefix(prefix, limit)
    }
    fn credit(&mut self, user: &str, points: i64, meta: Meta) -> Result<Entry, LedgerError> {
        to_ledger_result(sdk::ledger::credit(user, points, &to_meta(meta)))
    }
    fn debit(&mut self, user: &str, points: i64, meta: Meta) -> Result<Entry, LedgerError> {
        to_ledger_result(sdk::ledger::debit(user, points, &to_meta(meta)))
    }
    fn balance(&mut self, user: &str) -> i64 {
        sdk::ledger::balance(user)
    }
    fn history(&mut self, user: &str, cursor: Option<u64>, limit: u32) -> Page {
        let page = sdk::ledger::history(user, cursor, limit);
        Page {
            entries: page.entries.into_iter().map(to_entry).collect(),
            next_cursor: page.next_cursor,
        }
    }
    fn emit(&mut self, partner: &str, event_type: &str, payload: &str) -> Result<(), String> {
        sdk::host::emit_webhook(partner, event_type, payload)
    }
}

struct RewardsPlugin {
    config: Config,
}

fn route(method: &str, path: &str, principal: PrincipalKind) -> Route {
    Route {
        method: method.into(),
        path: path.into(),
        principal,
    }
}

/// The routes and who the host must authenticate for each.
fn routes() -> Vec<Route> {
    use PrincipalKind::*;
    #[allow(unused_mut)]
    let mut routes = vec![
        route("GET", "/api/rewards/rules", Admin),
        route("POST", "/api/rewards/rules", Admin),
        route("GET", "/api/rewards/rules/{id}", Admin),
        route("PUT", "/api/rewards/rules/{id}", Admin),
        route("DELETE", "/api/rewards/rules/{id}", Admin),
        route("GET", "/api/rewards/users/{id}", Admin),
        route("POST", "/api/rewards/users/{id}/adjust", Admin),
        route("GET", "/api/account/rewards", User),
        route("GET", "/api/account/rewards/history", User),
        route("POST", "/api/account/cashback/redeem", User),
    ];
    // The payout provider holds no mgpass credential: the route checks its HMAC itself.
    routes.push(route("POST", "/api/cashback/callback", Public));
    routes
}

impl Plugin for RewardsPlugin {
    fn new(config: &str) -> Result<Self, String> {
        Ok(RewardsPlugin {
            config: Config::parse(config)?,
        })
    }

    fn registration(&self) -> Registration {
        Registration {
            routes: routes(),
            partner_events: true,
            token_claims: true,
            authorize_login: false,
        }
    }

    fn on_partner_event(
        &mut self,
        event: sdk::PartnerEvent,
        partner: sdk::Partner,
    ) -> Result<sdk::EventOutcome, String> {
        let event = Event {
            event_id: event.event_id,
            user_id: event.user_id,
            event_type: event.event_type,
            metadata: event.metadata,
            reference_id: event.reference_id,
        };
        let partner = PartnerInfo {
            id: partner.id,
            multiplier: partner.multiplier,
        };
        let points = Rewards::new(&self.config, &mut WasmHost).on_event(&event, &partner)?;
        Ok(sdk::EventOutcome {
            points_awarded: points,
        })
    }

    fn handle_request(
        &mut self,
        principal: sdk::Principal,
        request: sdk::Request,
    ) -> Result<sdk::Response, String> {
        let kind = match principal.kind {
            PrincipalKind::Partner => CallerKind::Partner,
            PrincipalKind::User => CallerKind::User,
            PrincipalKind::Admin => CallerKind::Admin,
            PrincipalKind::Public => CallerKind::Public,
        };
        let caller = Caller {
            kind,
            subject: principal.subject,
        };
        let request = HttpRequest {
            headers: request.headers,
            method: request.method,
            path: request.path,
            params: request.path_params,
            query: request.query,
            body: request.body,
        };
        let response = Rewards::new(&self.config, &mut WasmHost).handle(&caller, &request)?;
        Ok(sdk::Response {
            status: response.status,
            body: response.body,
            headers: response.headers,
        })
    }

    fn token_claims(
        &mut self,
        user: sdk::UserInfo,
        _client_id: String,
        _scopes: Vec<String>,
    ) -> Result<Vec<(String, String)>, String> {
        Rewards::new(&self.config, &mut WasmHost).token_claims(&user.id)
    }
}

register_plugin!(RewardsPlugin);
