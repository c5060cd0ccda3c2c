//! The one error type handlers return, and the one place it becomes a response.
//!
//! OAuth endpoints answer RFC 6749 §5.2 JSON; bearer-protected APIs add RFC 6750 §3
//! `WWW-Authenticate`; pages answer HTML. Internal failures are logged with an error id
//! and answered without detail, so no secret or internal state reaches a client.

use super::{Resp, html_response, json_response};
use hyper::StatusCode;
use hyper::header::{HeaderValue, WWW_AUTHENTICATE};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RFC 6749 §5.2 error at the token, revocation or introspection endpoint.
    #[error("{code}: {description}")]
    OAuth {
        status: StatusCode,
        code: &'static str,
        description: String,
        /// `WWW-Authenticate` for `invalid_client` after HTTP Basic (§5.2).
        challenge: Option<&'static str>,
    },
    /// RFC 6750 §3: a missing, invalid or under-scoped bearer token.
    #[error("bearer: {description}")]
    Bearer {
        status: StatusCode,
        code: Option<&'static str>,
        description: String,
        scope: Option<&'static str>,
    },
    /// A JSON API error `{"error","error_description"}`.
    #[error("{code}: {message}")]
    Api {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// An HTML error page (e.g. `/authorize` before the redirect URI is trusted).
    #[error("page: {title}: {message}")]
    Page {
        status: StatusCode,
        title: &'static str,
        message: String,
    },
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn oauth(code: &'static str, description: impl Into<String>) -> Error {
        Error::OAuth {
            status: StatusCode::BAD_REQUEST,
            code,
            description: description.into(),
            challenge: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Error {
        Error::oauth("invalid_request", description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Error {
        Error::oauth("invalid_grant", description)
    }

    /// `invalid_client` (RFC 6749 §5.2): 401, with a Basic challenge when Basic was used.
    pub fn invalid_client(used_basic: bool) -> Error {
        Error::OAuth {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_client",
            description: "client authentication failed".into(),
            challenge: used_basic.then_some("Basic realm=\"mgpass\""),
        }
    }

    pub fn invalid_token(description: impl Into<String>) -> Error {
        Error::Bearer {
            status: StatusCode::UNAUTHORIZED,
            code: Some("invalid_token"),
            description: description.into(),
            scope: None,
        }
    }

    pub fn api(status: StatusCode, code: &'static str, message: impl Into<String>) -> Error {
        Error::Api {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::api(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn page(status: StatusCode, title: &'static str, message: impl Into<String>) -> Error {
        Error::Page {
            status,
            title,
            message: message.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Error {
        Error::Internal(e.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::OAuth { status, .. }
            | Error::Bearer { status, .. }
            | Error::Api { status, .. }
            | Error::Page { status, .. } => *status,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Renders the error. Internal errors are logged here, once, with an id.
    pub fn into_response(self) -> Resp {
        let status = self.status();
        match self {
            Error::OAuth {
                code,
                description,
                challenge,
                ..
            } => {
                let mut resp = json_response(
                    status,
                    &json!({"error": code, "error_description": description}),
                );
                if let Some(c) = challenge {
                    resp.headers_mut()
                        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(c));
                }
                no_store(resp)
            }
            Error::Bearer {
                code,
                description,
                scope,
                ..
            } => {
                let mut challenge = String::from("Bearer realm=\"mgpass\"");
                if let Some(code) = code {
                    challenge.push_str(&format!(", error=\"{code}\""));
                    challenge.push_str(&format!(
                        ", error_description=\"{}\"",
                        description.replace(['"', '\\'], "'")
                    ));
                }
                if let Some(scope) = scope {
                    challenge.push_str(&format!(", scope=\"{scope}\""));
                }
                let body = json!({"error": code.unwrap_or("invalid_request"), "error_description": description});
                let mut resp = json_response(status, &body);
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    resp.headers_mut().insert(WWW_AUTHENTICATE, v);
                }
                resp
            }
            Error::Api { code, message, .. } => json_response(
                status,
                &json!({"error": code, "error_description": message, "message": message}),
            ),
            Error::Page { title, message, .. } => {
                html_response(status, super::pages::error_page(title, &message))
            }
            Error::NotFound => json_response(
                status,
                &json!({"error": "not_found", "error_description": "no such endpoint"}),
            ),
            Error::MethodNotAllowed(allow) => {
                let mut resp = json_response(
                    status,
                    &json!({"error": "method_not_allowed", "error_description": format!("use {allow}")}),
                );
                resp.headers_mut()
                    .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
                resp
            }
            Error::Internal(detail) => {
                let id = crate::crypto::random_id("err_");
                tracing::error!(error_id = %id, %detail, "internal error");
                json_response(
                    status,
                    &json!({"error": "server_error", "error_description": format!("internal error {id}")}),
                )
            }
        }
    }
}

/// RFC 6749 §5.1: token responses and their errors must not be cached.
pub fn no_store(mut resp: Resp) -> Resp {
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp.headers_mut()
        .insert(hyper::header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        Error::internal(e)
    }
}

/// A plugin that could not answer: `503` when it is overloaded, paused or out of time
/// (retry later), `502` when it failed; the error id leads to the log line.
impl From<crate::plugin::PluginError> for Error {
    fn from(e: crate::plugin::PluginError) -> Self {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
        tracing::warn!(error = %e, "plugin call failed");
        let id = e.error_id().unwrap_or("-").to_string();
        match status {
            StatusCode::SERVICE_UNAVAILABLE => Error::api(
                status,
                "temporarily_unavailable",
                format!("the service is busy; retry later (error {id})"),
            ),
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::CONFLICT => {
                Error::api(status, "invalid_request", e.to_string())
            }
            _ => Error::api(
                StatusCode::BAD_GATEWAY,
                "plugin_error",
                format!("the request could not be processed; nothing was changed (error {id})"),
            ),
        }
    }
}

impl From<crate::keys::KeyError> for Error {
    fn from(e: crate::keys::KeyError) -> Self {
        Error::internal(e)
    }
}
