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

    /// Every parameter, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
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

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever bytes arrive, parsing ends; what it accepts re-encodes and parses
            /// back to the same parameters, with no empty values.
            #[test]
            fn accepted_input_round_trips(input in proptest::collection::vec(any::<u8>(), 0..256)) {
                if let Ok(p) = Params::parse(&input) {
                    let encoded = url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(p.iter())
                        .finish();
                    let again = Params::parse(encoded.as_bytes()).expect("re-encoded parses");
                    prop_assert_eq!(p.iter().collect::<Vec<_>>(), again.iter().collect::<Vec<_>>());
                    prop_assert!(p.iter().all(|(_, v)| !v.is_empty()));
                }
            }

            /// Form-shaped input of arbitrary strings: a repeated non-empty name is refused,
            /// otherwise every pair comes back decoded.
            #[test]
            fn encoded_pairs_decode(pairs in proptest::collection::vec(("\\PC{0,8}", "\\PC{0,8}"), 0..8)) {
                let encoded = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .finish();
                let non_empty: Vec<_> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
                let mut names: Vec<_> = non_empty.iter().map(|(k, _)| k).collect();
                names.sort();
                names.dedup();
                match Params::parse(encoded.as_bytes()) {
                    Ok(p) => {
                        prop_assert_eq!(names.len(), non_empty.len());
                        for (k, v) in non_empty {
                            prop_assert_eq!(p.get(k), Some(v.as_str()));
                        }
                    }
                    Err(_) => prop_assert!(names.len() < non_empty.len()),
                }
            }
        }
    }
}
