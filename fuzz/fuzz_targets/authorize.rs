//! `/authorize` parameters: the input is a query string. The store-free checks either
//! accept a request that satisfies every rule or name an OAuth error code; client id,
//! scope and redirect URI parsing never panic; an error redirect built on an accepted
//! redirect URI keeps its origin and path, carries the parameters intact, and is a valid
//! `Location` header value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mgpass::http::params::Params;
use mgpass::oidc::authorize::check_params;
use mgpass::types::{ClientId, KNOWN_SCOPES, RedirectUri, Scopes};

const CODES: &[&str] = &[
    "invalid_request",
    "invalid_scope",
    "unsupported_response_type",
    "request_not_supported",
    "request_uri_not_supported",
];

fuzz_target!(|data: &[u8]| {
    let Ok(params) = Params::parse(data) else {
        return;
    };
    if let Some(id) = params.get("client_id")
        && let Ok(c) = ClientId::parse(id)
    {
        assert!(!c.as_str().is_empty() && c.as_str().len() <= 128);
        assert!(c.as_str().bytes().all(|b| b.is_ascii_graphic()));
    }
    if let Ok(s) = Scopes::parse(params.get("scope").unwrap_or("")) {
        assert!(s.iter().all(|x| KNOWN_SCOPES.contains(&x)));
        assert_eq!(Scopes::parse(&s.to_string()).as_ref(), Ok(&s));
    }
    match check_params(&params) {
        Ok(c) => {
            assert_eq!(params.get("response_type"), Some("code"));
            assert_eq!(params.get("code_challenge_method"), Some("S256"));
            assert!(params.get("request").is_none() && params.get("request_uri").is_none());
            assert!(!c.scope.is_empty());
            assert_eq!(c.code_challenge.len(), 43);
            assert!(
                c.code_challenge
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert!(c.max_age.is_none_or(|m| m >= 0));
            assert!(!(c.prompt.none && (c.prompt.login || c.prompt.consent)));
            assert!(params.get("state").is_none_or(|s| s.len() <= 2048));
            assert!(params.get("nonce").is_none_or(|s| s.len() <= 512));
        }
        Err((code, description)) => {
            assert!(CODES.contains(&code), "unexpected code {code}");
            assert!(!description.is_empty());
        }
    }
    if let Some(uri) = params.get("redirect_uri")
        && let Ok(r) = RedirectUri::parse(uri)
    {
        let state = params.get("state").unwrap_or("");
        let description = params.get("error_description").unwrap_or("x");
        let out = r.with_query(&[
            ("error", "invalid_request"),
            ("error_description", description),
            ("iss", "https://id.example"),
            ("state", state),
        ]);
        assert!(http::HeaderValue::from_str(&out).is_ok(), "{out:?}");
        let before = url::Url::parse(r.as_str()).unwrap();
        let after = url::Url::parse(&out).expect("redirect parses");
        assert_eq!(before.scheme(), after.scheme());
        assert_eq!(before.host(), after.host());
        assert_eq!(before.port(), after.port());
        assert_eq!(before.path(), after.path());
        assert!(after.fragment().is_none());
        let tail: Vec<(String, String)> = after
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let n = tail.len();
        assert!(n >= 4);
        assert_eq!(tail[n - 4].1, "invalid_request");
        assert_eq!(tail[n - 3].1, description);
        assert_eq!(tail[n - 1], ("state".to_string(), state.to_string()));
    }
});
