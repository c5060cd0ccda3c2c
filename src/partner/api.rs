//! The partner admin API under `/api/rewards/partners` and the webhook delivery log,
//! behind the admin guard.

use super::{PartnerSpec, create, retire_from, rotate_key, rotate_webhook_secret, update, view};
use crate::app::App;
use crate::http::{Error, Req, Resp, json_response};
use crate::oidc::guards::require_admin;
use crate::store::{Finished, OutboxKind};
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// Keep the old credential working this many seconds; absent or 0: retire it now.
    overlap_seconds: Option<u64>,
}

/// Routes `/api/rewards/partners…` and `/api/rewards/webhooks/deliveries…`; `None` when
/// the path is not ours.
pub async fn route(app: &App, req: &Req) -> Option<Result<Resp, Error>> {
    let rest = req.path.strip_prefix("/api/rewards/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    let handled = match (segments.as_slice(), &req.method) {
        (["partners"], &Method::GET) => list(app, req),
        (["partners"], &Method::POST) => add(app, req),
        (["partners", id], &Method::GET) => show(app, req, id),
        (["partners", id], &Method::PUT | &Method::PATCH) => change(app, req, id),
        (["partners", id, "disable"], &Method::POST) => change_with(
            app,
            req,
            id,
            &PartnerSpec {
                enabled: Some(false),
                ..Default::default()
            },
        ),
        (["partners", id, "keys", "rotate"], &Method::POST) => rotate(app, req, id, false),
        (["partners", id, "webhook-secret", "rotate"], &Method::POST) => rotate(app, req, id, true),
        (["webhooks", "deliveries"], &Method::GET) => deliveries(app, req),
        (["webhooks", "deliveries", id, "redeliver"], &Method::POST) => {
            redeliver(app, req, id).await
        }
        (["partners", ..] | ["webhooks", "deliveries", ..], _) => {
            Err(Error::MethodNotAllowed("GET, POST, PUT, PATCH"))
        }
        _ => return None,
    };
    Some(match handled {
        Ok(resp) => flushed(app, resp).await,
        Err(e) => Err(e),
    })
}

async fn flushed(app: &App, resp: Resp) -> Result<Resp, Error> {
    app.store.flush().await?;
    Ok(resp)
}

fn body<T: for<'de> Deserialize<'de> + Default>(req: &Req) -> Result<T, Error> {
    if req.body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))
}

fn list(app: &App, req: &Req) -> Result<Resp, Error> {
    require_admin(app, req)?;
    let now = app.clock.now();
    let partners: Vec<Value> = app.store.partners()?.iter().map(|p| view(p, now)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "partners": partners }),
    ))
}

fn add(app: &App, req: &Req) -> Result<Resp, Error> {
    require_admin(app, req)?;
    let spec: PartnerSpec = body(req)?;
    let created = create(app, &spec)?;
    let mut v = view(&created.partner, app.clock.now());
    v["api_key"] = json!(created.api_key);
    v["webhook_secret"] = json!(created.webhook_secret);
    Ok(json_response(StatusCode::CREATED, &v))
}

fn show(app: &App, req: &Req, id: &str) -> Result<Resp, Error> {
    require_admin(app, req)?;
    let p = app.store.partner(id)?.ok_or_else(|| super::not_found(id))?;
    Ok(json_response(StatusCode::OK, &view(&p, app.clock.now())))
}

fn change(app: &App, req: &Req, id: &str) -> Result<Resp, Error> {
    let spec: PartnerSpec = body(req)?;
    change_with(app, req, id, &spec)
}

fn change_with(app: &App, req: &Req, id: &str, spec: &PartnerSpec) -> Result<Resp, Error> {
    require_admin(app, req)?;
    let p = update(app, id, spec)?;
    Ok(json_response(StatusCode::OK, &view(&p, app.clock.now())))
}

fn rotate(app: &App, req: &Req, id: &str, webhook_secret: bool) -> Result<Resp, Error> {
    require_admin(app, req)?;
    let b: RotateBody = body(req)?;
    let retire = retire_from(b.overlap_seconds, app.clock.now());
    let (partner, field, value) = if webhook_secret {
        let (p, s) = rotate_webhook_secret(app, id, retire)?;
        (p, "webhook_secret", s)
    } else {
        let (p, k) = rotate_key(app, id, retire)?;
        (p, "api_key", k)
    };
    let mut v = view(&partner, app.clock.now());
    v[field] = json!(value);
    Ok(json_response(StatusCode::OK, &v))
}

fn delivery_view(item: &crate::store::OutboxItem, status: &str) -> Option<Value> {
    let OutboxKind::Webhook {
        partner_id,
        event_type,
        ..
    } = &item.kind
    else {
        return None;
    };
    Some(json!({
        "id": item.id,
        "partner_id": partner_id,
        "event_type": event_type,
        "status": status,
        "attempts": item.attempts,
        "last_error": item.last_error,
        "created_at": item.created_at,
        "next_attempt_ms": item.next_attempt_ms,
    }))
}

fn deliveries(app: &App, req: &Req) -> Result<Resp, Error> {
    require_admin(app, req)?;
    let mut out: Vec<Value> = app
        .store
        .outbox_pending()?
        .iter()
        .filter_map(|i| delivery_view(i, "pending"))
        .collect();
    for (how, _, item) in app.store.outbox_finished()? {
        let status = match how {
            Finished::Delivered => "delivered",
            Finished::GaveUp => "failed",
        };
        out.extend(delivery_view(&item, status));
    }
    Ok(json_response(StatusCode::OK, &json!({ "deliveries": out })))
}

async fn redeliver(app: &App, req: &Req, id: &str) -> Result<Resp, Error> {
    require_admin(app, req)?;
    if !app.store.outbox_requeue(id, app.clock.now_ms())? {
        return Err(Error::api(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such delivery",
        ));
    }
    app.outbox_wake.notify_one();
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({ "id": id, "status": "pending" }),
    ))
}
