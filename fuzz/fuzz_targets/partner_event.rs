//! Partner event JSON: never panics; refuses with a 400 whose message names a field, or
//! accepts an event that satisfies every rule, unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mgpass::http::Error;
use mgpass::partner::events::check_body;
use serde_json::Value;

const FIELDS: &[&str] = &["body", "user_id", "event_type", "metadata"];

fuzz_target!(|data: &[u8]| {
    match check_body(data) {
        Ok(v) => {
            let ok_str = |s: &Value| {
                s.as_str()
                    .is_some_and(|s| !s.trim().is_empty() && s.len() <= 128)
            };
            assert!(ok_str(&v["user_id"]) && ok_str(&v["event_type"]));
            let m = v["metadata"].as_object().expect("metadata is an object");
            assert!(
                m["reference_id"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty() && r.len() <= 128)
            );
            assert!(
                m.get("amount")
                    .is_none_or(|a| a.is_null() || a.as_f64().is_some_and(|a| a >= 0.0))
            );
            assert!(
                m.get("item_count")
                    .is_none_or(|c| c.is_null() || c.as_u64().is_some())
            );
            for s in ["currency", "original_reference_id"] {
                assert!(m.get(s).is_none_or(|c| c.is_null() || c.is_string()));
            }
            assert_eq!(
                serde_json::from_slice::<Value>(data).ok().as_ref(),
                Some(&v),
                "the accepted value is the body"
            );
        }
        Err(e) => {
            assert_eq!(e.status().as_u16(), 400);
            let Error::Api { message, .. } = &e else {
                panic!("not an API error: {e:?}");
            };
            assert!(
                FIELDS.iter().any(|f| message.starts_with(f)),
                "message names no field: {message}"
            );
        }
    }
});
