//! `POST /api/partner/events`: validated, idempotent per partner and `reference_id`,
//! handed to the plugin host's partner-event hook; the event record, the plugin's
//! ledger writes and its webhooks commit in one transaction, flushed before the `200`.

use crate::app::App;
use crate::crypto::{random_id, sha256_hex};
use crate::http::{Error, Req, Resp, add_header, json_response};
use crate::plugin::{EventOutcome, EventRecorder, PartnerEvent, PluginError};
use crate::store::{EventRecord, Partner, StoreError};
use crate::types::UserId;
use hyper::StatusCode;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// A validated event body.
struct Event {
    user_id: String,
    event_type: String,
    metadata: Map<String, Value>,
    reference_id: String,
}

fn field_error(message: impl Into<String>) -> Error {
    Error::bad_request(message)
}

/// Checks the body's shape, naming the first field that is wrong.
fn parse(body: &[u8]) -> Result<(Event, Value), Error> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| field_error(format!("body: not valid JSON ({e})")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| field_error("body: must be a JSON object"))?;
    let string = |name: &str| -> Result<String, Error> {
        match obj.get(name) {
            None | Some(Value::Null) => Err(field_error(format!("{name}: is required"))),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(field_error(format!("{name}: must not be empty")))
            }
            Some(Value::String(s)) if s.len() > 128 => {
                Err(field_error(format!("{name}: at most 128 characters")))
            }
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(field_error(format!("{name}: must be a string"))),
        }
    };
    let user_id = string("user_id")?;
    let event_type = string("event_type")?;
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => return Err(field_error("metadata.reference_id: is required")),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(field_error("metadata: must be an object")),
    };
    let reference_id = match metadata.get("reference_id") {
        None | Some(Value::Null) => return Err(field_error("metadata.reference_id: is required")),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => s.clone(),
        Some(Value::String(_)) => {
            return Err(field_error(
                "metadata.reference_id: must be 1-128 characters",
            ));
        }
        Some(_) => return Err(field_error("metadata.reference_id: must be a string")),
    };
    for (name, check) in [
        ("amount", Value::is_number as fn(&Value) -> bool),
        ("item_count", |v: &Value| v.as_u64().is_some()),
        ("currency", Value::is_string),
        ("original_reference_id", Value::is_string),
    ] {
        if let Some(v) = metadata.get(name)
            && !v.is_null()
            && !check(v)
        {
            let kind = match name {
                "item_count" => "a non-negative integer",
                "amount" => "a number",
                _ => "a string",
            };
            return Err(field_error(format!("metadata.{name}: must be {kind}")));
        }
    }
    if metadata
        .get("amount")
        .and_then(Value::as_f64)
        .is_some_and(|a| a < 0.0)
    {
        return Err(field_error("metadata.amount: must not be negative"));
    }
    Ok((
        Event {
            user_id,
            event_type,
            metadata,
            reference_id,
        },
        value,
    ))
}

/// The body in canonical form for the idempotency hash: compact, object keys sorted at
/// every level. The same event then hashes the same however the partner serialized it,
/// and whether or not some dependency turns on serde_json's `preserve_order` (which
/// would make `Value::to_string` keep the sender's key order). Without that feature this
/// is exactly `Value::to_string`, so records written before stay valid.
fn canonical(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// [`parse`] for the fuzz targets: the event's JSON when valid, the `400` otherwise.
#[doc(hidden)]
pub fn check_body(body: &[u8]) -> Result<Value, Error> {
    parse(body).map(|(_, value)| value)
}

fn accepted(record: &EventRecord) -> Value {
    json!({
        "accepted": true,
        "points_awarded": record.points_awarded,
        "event_id": record.event_id,
    })
}

fn replay(record: &EventRecord, request_hash: &str) -> Result<Resp, Error> {
    if record.request_hash != request_hash {
        return Err(Error::api(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "this reference_id was already used with a different event",
        ));
    }
    let mut resp = json_response(StatusCode::OK, &accepted(record));
    add_header(&mut resp, "idempotent-replayed", "true")?;
    Ok(resp)
}

/// `POST /api/partner/events`
pub async fn post_event(app: &App, req: &Req) -> Result<Resp, Error> {
    let partner: Partner = super::require_partner(app, req)?;
    let (event, body) = parse(&req.body)?;
    if !partner.event_types.contains(&event.event_type) {
        return Err(Error::api(
            StatusCode::FORBIDDEN,
            "event_type_not_allowed",
            format!(
                "event_type {:?} is not allowed for this partner",
                event.event_type
            ),
        ));
    }
    let request_hash = sha256_hex(canonical(&body).as_bytes());
    if let Some(existing) = app.store.event_record(&partner.id, &event.reference_id)? {
        return replay(&existing, &request_hash);
    }
    if app.store.user(&UserId(event.user_id.clone()))?.is_none() {
        return Err(Error::api(
            StatusCode::NOT_FOUND,
            "user_not_found",
            format!("user_id {:?} is not a known user", event.user_id),
        ));
    }
    let now = app.clock.now();
    let event_id = random_id("evt_");
    let record = EventRecord {
        event_id: event_id.clone(),
        request_hash: request_hash.clone(),
        user_id: event.user_id.clone(),
        event_type: event.event_type.clone(),
        points_awarded: 0,
        created_at: now,
    };
    let (partner_id, reference_id) = (partner.id.clone(), event.reference_id.clone());
    let recorder: EventRecorder = Arc::new(move |tx, outcome: &EventOutcome| {
        let mut record = record.clone();
        record.points_awarded = outcome.points_awarded;
        crate::store::insert_event_in(tx, &partner_id, &reference_id, &record)
    });
    let outcome = app
        .plugins
        .on_partner_event(
            PartnerEvent {
                event_id: event_id.clone(),
                user_id: event.user_id,
                event_type: event.event_type,
                metadata: Value::Object(event.metadata).to_string(),
                reference_id: event.reference_id.clone(),
            },
            crate::plugin::Partner {
                id: partner.id.clone(),
                name: partner.name.clone(),
                multiplier: partner.multiplier,
            },
            Some(recorder),
        )
        .await;
    match outcome {
        Ok(outcome) => {
            app.outbox_wake.notify_one();
            Ok(json_response(
                StatusCode::OK,
                &json!({"accepted": true, "points_awarded": outcome.points_awarded, "event_id": event_id}),
            ))
        }
        // A concurrent duplicate committed first: answer as its replay.
        Err(PluginError::Store(StoreError::Rejected(_))) => {
            match app.store.event_record(&partner.id, &event.reference_id)? {
                Some(existing) => replay(&existing, &request_hash),
                None => Err(Error::internal("event rejected without a record")),
            }
        }
        Err(e) => Err(Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_bodies_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("not json", "body"),
            ("[]", "body"),
            (
                r#"{"event_type":"purchase","metadata":{"reference_id":"r"}}"#,
                "user_id",
            ),
            (
                r#"{"user_id":5,"event_type":"purchase","metadata":{"reference_id":"r"}}"#,
                "user_id",
            ),
            (
                r#"{"user_id":"u","metadata":{"reference_id":"r"}}"#,
                "event_type",
            ),
            (
                r#"{"user_id":"u","event_type":"purchase"}"#,
                "metadata.reference_id",
            ),
            (
                r#"{"user_id":"u","event_type":"purchase","metadata":[]}"#,
                "metadata",
            ),
            (
                r#"{"user_id":"u","event_type":"purchase","metadata":{}}"#,
                "metadata.reference_id",
            ),
            (
                r#"{"user_id":"u","event_type":"purchase","metadata":{"reference_id":"r","amount":"ten"}}"#,
                "metadata.amount",
            ),
            (
                r#"{"user_id":"u","event_type":"purchase","metadata":{"reference_id":"r","item_count":-1}}"#,
                "metadata.item_count",
            ),
            (
                r#"{"user_id":"u","event_type":"purchase","metadata":{"reference_id":"r","amount":-5}}"#,
                "metadata.amount",
            ),
        ];
        for (body, field) in cases {
            match parse(body.as_bytes()) {
                Err(Error::Api { message, .. }) => {
                    assert!(message.starts_with(field), "{body}: {message}")
                }
                other => panic!(
                    "{body}: expected an error naming {field}, got {:?}",
                    other.map(|_| ())
                ),
            }
        }
        assert!(parse(br#"{"user_id":"u","event_type":"purchase","metadata":{"reference_id":"r","amount":12.5,"currency":"GHS","item_count":2}}"#).is_ok());
    }

    #[test]
    fn canonical_form_ignores_key_order_and_whitespace() {
        let a: Value = serde_json::from_str(
            r#"{"user_id":"u\"1","event_type":"purchase","metadata":{"reference_id":"r","amount":12.5,"tags":[{"b":1,"a":2}]}}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{ "metadata": {"tags": [{"a": 2, "b": 1}], "amount": 12.5, "reference_id": "r"},
                "event_type": "purchase", "user_id": "u\"1" }"#,
        )
        .unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(
            canonical(&a),
            r#"{"event_type":"purchase","metadata":{"amount":12.5,"reference_id":"r","tags":[{"a":2,"b":1}]},"user_id":"u\"1"}"#
        );
        let c: Value = serde_json::from_str(r#"{"metadata":{"amount":13}}"#).unwrap();
        assert_ne!(canonical(&c), canonical(&a));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,140}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(
                    proptest::sample::select(vec![
                        "user_id",
                        "event_type",
                        "metadata",
                        "reference_id",
                        "amount",
                        "item_count",
                        "currency",
                        "original_reference_id",
                        "x",
                    ])
                    .prop_map(str::to_string),
                    inner,
                    0..6,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The rules an accepted event satisfies.
    fn assert_valid(v: &Value) -> Result<(), TestCaseError> {
        let ok_str = |s: Option<&Value>| {
            s.and_then(Value::as_str)
                .is_some_and(|s| !s.trim().is_empty() && s.len() <= 128)
        };
        prop_assert!(ok_str(v.get("user_id")) && ok_str(v.get("event_type")));
        let m = v["metadata"].as_object().expect("metadata object");
        prop_assert!(
            m["reference_id"]
                .as_str()
                .is_some_and(|r| !r.is_empty() && r.len() <= 128)
        );
        prop_assert!(
            m.get("amount")
                .is_none_or(|a| a.is_null() || a.as_f64().is_some_and(|a| a >= 0.0))
        );
        prop_assert!(
            m.get("item_count")
                .is_none_or(|c| c.is_null() || c.as_u64().is_some())
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes: a 400 naming a field, or an event that satisfies every rule.
        #[test]
        fn bytes_are_refused_with_400_or_valid(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            match check_body(&body) {
                Ok(v) => assert_valid(&v)?,
                Err(e) => prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST),
            }
        }

        /// Arbitrary JSON shaped like an event, at the top level and inside `metadata`.
        #[test]
        fn json_is_refused_with_400_or_valid(
            top in json_value(),
            metadata in json_value(),
            reference_id in proptest::option::of("\\PC{0,130}"),
        ) {
            let mut v = top;
            if let Value::Object(m) = &mut v {
                let mut metadata = metadata;
                if let (Value::Object(md), Some(r)) = (&mut metadata, reference_id) {
                    md.insert("reference_id".into(), Value::from(r));
                }
                m.insert("metadata".into(), metadata);
            }
            match check_body(v.to_string().as_bytes()) {
                Ok(accepted) => {
                    assert_valid(&accepted)?;
                    prop_assert_eq!(accepted, v);
                }
                Err(e) => prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST),
            }
        }
    }
}
