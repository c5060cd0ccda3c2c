//! Query/form decoding: never panics; what it accepts re-encodes and parses back to the
//! same parameters; it refuses only a repeated, non-empty parameter; `merge` keeps both
//! sides or refuses a conflict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mgpass::http::params::Params;
use std::collections::HashSet;

fn pairs(p: &Params) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn check(data: &[u8]) -> Option<Params> {
    let repeated = {
        let mut seen = HashSet::new();
        url::form_urlencoded::parse(data)
            .filter(|(_, v)| !v.is_empty())
            .any(|(k, _)| !seen.insert(k.into_owned()))
    };
    match Params::parse(data) {
        Ok(p) => {
            assert!(!repeated, "a repeated parameter was accepted");
            let got = pairs(&p);
            assert!(got.iter().all(|(_, v)| !v.is_empty()), "empty value kept");
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(p.iter())
                .finish();
            let again = Params::parse(encoded.as_bytes()).expect("re-encoded parameters parse");
            assert_eq!(pairs(&again), got, "round trip changed the parameters");
            for (k, v) in &got {
                assert_eq!(p.get(k), Some(v.as_str()));
            }
            Some(p)
        }
        Err(e) => {
            assert!(repeated, "refused without a repeat: {e}");
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The whole input, and its two halves split at the first NUL as GET + POST.
    check(data);
    let (a, b) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => return,
    };
    let (Some(pa), Some(pb)) = (check(a), check(b)) else {
        return;
    };
    let (la, lb) = (pairs(&pa), pairs(&pb));
    match pa.merge(pb) {
        Ok(m) => {
            for (k, v) in la.iter().chain(lb.iter()) {
                assert_eq!(m.get(k), Some(v.as_str()), "merge lost {k:?}");
            }
            assert!(m.iter().all(|(k, _)| {
                la.iter().any(|(x, _)| x == k) || lb.iter().any(|(x, _)| x == k)
            }));
        }
        Err(_) => assert!(
            la.iter()
                .any(|(k, v)| lb.iter().any(|(x, y)| x == k && y != v)),
            "merge refused without a conflict"
        ),
    }
});
