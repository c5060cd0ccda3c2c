//! What the plugin needs from the host, as a trait over plain types, so the whole
//! service runs natively against an in-memory host in tests. `lib.rs` implements it
//! over the real WIT imports.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Earn,
    Redeem,
    Refund,
    Adjust,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Earn => "earn",
            Kind::Redeem => "redeem",
            Kind::Refund => "refund",
            Kind::Adjust => "adjust",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub kind: Kind,
    pub partner: Option<String>,
    pub event_type: Option<String>,
    pub reference: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    pub seq: u64,
    pub kind: Kind,
    pub points: i64,
    pub balance_after: i64,
    pub partner: Option<String>,
    pub event_type: Option<String>,
    pub reference: Option<String>,
    pub note: Option<String>,
    /// ms since the Unix epoch.
    pub time: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LedgerError {
    Insufficient(i64),
    InvalidAmount(i64),
    UnknownUser(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub next_cursor: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

pub trait Host {
    fn now(&mut self) -> i64;
    fn log(&mut self, level: Level, message: &str);
    fn user_exists(&mut self, id: &str) -> bool;
    fn kv_get(&mut self, key: &str) -> Option<String>;
    fn kv_put(&mut self, key: &str, value: &str) -> Result<(), String>;
    fn kv_delete(&mut self, key: &str);
    fn kv_scan(&mut self, prefix: &str, limit: u32) -> Vec<(String, String)>;
    fn credit(&mut self, user: &str, points: i64, meta: Meta) -> Result<Entry, LedgerError>;
    fn debit(&mut self, user: &str, points: i64, meta: Meta) -> Result<Entry, LedgerError>;
    fn balance(&mut self, user: &str) -> i64;
    fn history(&mut self, user: &str, cursor: Option<u64>, limit: u32) -> Page;
    fn emit(&mut self, partner: &str, event_type: &str, payload: &str) -> Result<(), String>;
}

/// Who the host authenticated for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    Partner,
    User,
    Admin,
    /// No credential: the route authenticates itself (the payout callback's HMAC).
    Public,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub kind: CallerKind,
    /// The user id for users and admins, the partner id for partners.
    pub subject: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub params: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    /// Lower-case names; the host withholds credentials.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        find(&self.params, name, false)
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        find(&self.query, name, false)
    }

    /// Header names compare case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name, true)
    }
}

fn find<'a>(pairs: &'a [(String, String)], name: &str, any_case: bool) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| {
            if any_case {
                k.eq_ignore_ascii_case(name)
            } else {
                k == name
            }
        })
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

/// A partner event as the host hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub user_id: String,
    pub event_type: String,
    /// JSON text of the event's `metadata`.
    pub metadata: String,
    pub reference_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartnerInfo {
    pub id: String,
    pub multiplier: f64,
}
