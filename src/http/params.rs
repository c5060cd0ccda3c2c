//! `application/x-www-form-urlencoded` parameters, for query strings and form bodies.
//! RFC 6749 §3.1: a parameter sent more than once is an error, and an empty value is
//! treated as absent.

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Decodes `input`; a repeated parameter name is refused, naming it.
    pub fn parse(input: &[u8]) -> Result<Params, String> {
        let mut map = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(input) {
            if v.is_empty() {
                continue;
            }
            if map.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(format!("parameter {k:?} was sent more than once"));
            }
        }
        Ok(Params(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Adds the parameters of `other` that `self` lacks; a name present in both with a
    /// different value is refused (OIDC Core §3.1.2.1 for GET+POST mixes).
    pub fn merge(mut self, other: Params) -> Result<Params, String> {
        for (k, v) in other.0 {
            match self.0.get(&k) {
                Some(existing) if *existing != v => {
                    return Err(format!("parameter {k:?} was sent more than once"));
                }
                _ => {
                    self.0.insert(k, v);
                }
            }
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_refuses_repeats() {
        let p = Params::parse(b"a=1&b=x+y&c=%2F&e=").unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some("x y"));
        assert_eq!(p.get("c"), Some("/"));
        assert_eq!(p.get("e"), None);
        assert!(Params::parse(b"a=1&a=2").unwrap_err().contains("\"a\""));
    }

    #[test]
    fn survives_garbage() {
        for input in [&b"%%%"[..], b"\xff\xfe=\xff", b"&&&=", b"=x"] {
            let _ = Params::parse(input);
        }
    }
}
