//! Cookie parsing (RFC 6265 §5.4 `Cookie` header) and the session cookie's `Set-Cookie`.

/// The value of cookie `name` in a `Cookie` header, if present.
pub fn find<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

pub const SESSION_COOKIE: &str = "mgpass_session";

/// `Set-Cookie` for the session: `Secure; HttpOnly; SameSite=Lax; Path=/`, `Domain` when
/// configured, and `Max-Age` only when the user asked to be remembered.
pub fn session_cookie(value: &str, domain: Option<&str>, max_age: Option<u64>) -> String {
    let mut c = format!("{SESSION_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Lax");
    if let Some(d) = domain {
        c.push_str(&format!("; Domain={d}"));
    }
    if let Some(secs) = max_age {
        c.push_str(&format!("; Max-Age={secs}"));
    }
    c
}

/// `Set-Cookie` that deletes the session cookie on the same domain and path.
pub fn clear_session_cookie(domain: Option<&str>) -> String {
    let mut c = format!(
        "{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
    );
    if let Some(d) = domain {
        c.push_str(&format!("; Domain={d}"));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookie_among_others() {
        let h = "a=1; mgpass_session=abc; b=2";
        assert_eq!(find(h, "mgpass_session"), Some("abc"));
        assert_eq!(find(h, "c"), None);
        assert_eq!(find("garbage;;=;", "x"), None);
    }

    #[test]
    fn session_cookie_attributes() {
        let c = session_cookie("v", Some(".example.com"), Some(60));
        assert!(c.contains("Secure") && c.contains("HttpOnly") && c.contains("SameSite=Lax"));
        assert!(c.contains("Domain=.example.com") && c.contains("Max-Age=60"));
        assert!(!session_cookie("v", None, None).contains("Max-Age"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any header, any name: a found value is a trimmed, unquoted slice of the
            /// header that followed `name=`.
            #[test]
            fn found_values_come_from_the_header(header in "\\PC{0,120}", name in "[a-z_;= ]{0,8}") {
                if let Some(v) = find(&header, &name) {
                    let prefix = format!("{name}=");
                    prop_assert!(header.contains(&prefix));
                    prop_assert!(header.contains(v));
                    prop_assert!(!v.starts_with('"') && !v.ends_with('"'));
                }
            }

            /// A cookie among others is found with its value.
            #[test]
            fn finds_cookie_among_junk(
                before in proptest::collection::vec(("[a-z]{1,6}", "[a-zA-Z0-9]{0,6}"), 0..4),
                value in "[A-Za-z0-9_-]{0,43}",
                after in "\\PC{0,40}",
            ) {
                let mut parts: Vec<String> = before
                    .iter()
                    .filter(|(k, _)| k != SESSION_COOKIE)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                parts.push(format!("{SESSION_COOKIE}={value}"));
                parts.push(after);
                let header = parts.join("; ");
                prop_assert_eq!(find(&header, SESSION_COOKIE), Some(value.as_str()));
            }
        }
    }
}
