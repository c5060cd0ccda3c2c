//! Validated domain types: a value of one of these has already passed its checks, so
//! code that holds one need not check again.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

/// A registered client's identifier: 1–128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    pub fn parse(s: &str) -> Result<ClientId, String> {
        if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("client id must be 1-128 visible ASCII characters".into());
        }
        Ok(ClientId(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's stable identifier (`usr_…`), the `sub` of their tokens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub(crate) String);

impl UserId {
    pub fn generate() -> UserId {
        UserId(crate::crypto::random_id("usr_"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An absolute URI that may receive a browser redirect or a server-to-server call:
/// `https`, or `http` only on a loopback host (RFC 9700 §2.1, RFC 8252 §7.3). No fragment
/// (RFC 6749 §3.1.2). Compared by exact string (RFC 9700 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RedirectUri(String);

/// Deserializing validates too, so no `RedirectUri` exists that `parse` would refuse.
impl TryFrom<String> for RedirectUri {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        RedirectUri::parse(&s)
    }
}

impl From<RedirectUri> for String {
    fn from(u: RedirectUri) -> String {
        u.0
    }
}

impl RedirectUri {
    pub fn parse(s: &str) -> Result<RedirectUri, String> {
        let url = url::Url::parse(s).map_err(|e| format!("{s:?} is not an absolute URI: {e}"))?;
        if url.fragment().is_some() {
            return Err(format!("{s:?} must not contain a fragment"));
        }
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => return Err(format!("{s:?} uses http on a host that is not loopback")),
            other => return Err(format!("{s:?} has unsupported scheme {other:?}")),
        }
        if url.host().is_none() {
            return Err(format!("{s:?} has no host"));
        }
        Ok(RedirectUri(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URI with `params` appended to its query, for an authorization response.
    pub fn with_query(&self, params: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&self.0).expect("validated at construction");
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
        }
        url.into()
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The scopes this provider knows.
pub const KNOWN_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access", ADMIN_SCOPE];
pub const ADMIN_SCOPE: &str = "mgpass:admin";
pub const ADMIN_ROLE: &str = "mgpass:admin";

/// A set of known scopes, kept sorted so equal sets compare and print equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    /// Parses a space-separated scope string (RFC 6749 §3.3); an unknown scope is an error.
    pub fn parse(s: &str) -> Result<Scopes, String> {
        let mut set = BTreeSet::new();
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            if !KNOWN_SCOPES.contains(&token) {
                return Err(format!("unknown scope {token:?}"));
            }
            set.insert(token.to_string());
        }
        Ok(Scopes(set))
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    pub fn is_subset(&self, other: &Scopes) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn remove(&mut self, scope: &str) {
        self.0.remove(scope);
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn union(&self, other: &Scopes) -> Scopes {
        Scopes(self.0.union(&other.0).cloned().collect())
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined: Vec<&str> = self.iter().collect();
        f.write_str(&joined.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        assert!(RedirectUri::parse("https://app.example/cb").is_ok());
        assert!(RedirectUri::parse("http://127.0.0.1:9000/cb").is_ok());
        assert!(RedirectUri::parse("http://localhost/cb").is_ok());
        assert!(RedirectUri::parse("http://[::1]/cb").is_ok());
        assert!(RedirectUri::parse("http://app.example/cb").is_err());
        assert!(RedirectUri::parse("/cb").is_err());
        assert!(RedirectUri::parse("https://app.example/cb#x").is_err());
        assert!(RedirectUri::parse("javascript:alert(1)").is_err());
    }

    #[test]
    fn redirect_uri_validates_when_deserialized() {
        let ok: RedirectUri = serde_json::from_str("\"https://a.example/cb\"").unwrap();
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            "\"https://a.example/cb\""
        );
        assert!(serde_json::from_str::<RedirectUri>("\"http://a.example/cb\"").is_err());
    }

    #[test]
    fn redirect_uri_appends_query() {
        let uri = RedirectUri::parse("https://app.example/cb?x=1").unwrap();
        assert_eq!(
            uri.with_query(&[("code", "a b"), ("state", "s")]),
            "https://app.example/cb?x=1&code=a+b&state=s"
        );
    }

    #[test]
    fn scopes_parse_and_reject_unknown() {
        let s = Scopes::parse("openid  email openid").unwrap();
        assert_eq!(s.to_string(), "email openid");
        assert!(Scopes::parse("openid wat").unwrap_err().contains("wat"));
    }
}
