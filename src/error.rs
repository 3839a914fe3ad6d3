//! The one error type of the HTTP edge, rendered exactly like PocketBase's API errors:
//! `{"data": {...}, "message": "...", "status": N}`.
//!
//! Modules below the edge (storage, archive, restore) keep their own small error enums;
//! handlers map them here. Messages never contain server paths or raw backend errors:
//! server-side failures are logged with their cause chain and answered with a generic text.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::borrow::Cow;

/// PocketBase's generic validation message (copied from PocketBase).
pub const MSG_VALIDATION: &str = "An error occurred while validating the submitted data.";
/// PocketBase's message for a body that cannot be parsed (copied from PocketBase).
pub const MSG_LOAD: &str = "An error occurred while loading the submitted data.";
/// PocketBase's 401 message for superuser-only routes.
pub const MSG_UNAUTHORIZED: &str = "The request requires valid record authorization token.";
/// PocketBase's 500 message.
pub const MSG_INTERNAL: &str = "Something went wrong while processing your request.";
/// PocketBase's default 403 message.
pub const MSG_FORBIDDEN: &str = "You are not allowed to perform this request.";
/// PocketBase's 429 message (`router.NewTooManyRequestsError`).
pub const MSG_TOO_MANY_REQUESTS: &str = "Too Many Requests.";
/// PocketBase's 404 message.
pub const MSG_NOT_FOUND: &str = "The requested resource wasn't found.";

/// A PocketBase-style API error.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: Cow<'static, str>,
    data: Map<String, Value>,
}

/// One field's validation failure, `{"code": ..., "message": ...}` (plus `params` where
/// PocketBase sends them).
#[derive(Debug, Clone)]
pub struct FieldError {
    pub code: &'static str,
    pub message: Cow<'static, str>,
    pub params: Option<Value>,
}

impl FieldError {
    pub fn new(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            params: None,
        }
    }

    /// `validation_required` / `Cannot be blank.`
    pub fn required() -> Self {
        Self::new("validation_required", "Cannot be blank.")
    }

    #[must_use]
    pub fn with_params(mut self, params: Value) -> Self {
        self.params = Some(params);
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("code".into(), Value::from(self.code));
        obj.insert("message".into(), Value::from(self.message.as_ref()));
        if let Some(p) = &self.params {
            obj.insert("params".into(), p.clone());
        }
        Value::Object(obj)
    }
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
            data: Map::new(),
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401 with PocketBase's "requires valid record authorization token" text.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, MSG_UNAUTHORIZED)
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// PocketBase's `429 Too Many Requests.` (rate limits, and logins past the gate).
    pub fn too_many_requests() -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, MSG_TOO_MANY_REQUESTS)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, MSG_NOT_FOUND)
    }

    /// 400 "An error occurred while loading the submitted data."
    pub fn load_failed() -> Self {
        Self::bad_request(MSG_LOAD)
    }

    /// 400 validation error with per-field details.
    pub fn validation(fields: impl IntoIterator<Item = (&'static str, FieldError)>) -> Self {
        let mut err = Self::bad_request(MSG_VALIDATION);
        for (name, fe) in fields {
            err.data.insert(name.to_string(), fe.to_json());
        }
        err
    }

    /// Replaces `data` (nested field errors, as settings validation gives them).
    #[must_use]
    pub fn with_data(mut self, data: Map<String, Value>) -> Self {
        self.data = data;
        self
    }

    /// Adds one field error to `data`.
    #[must_use]
    pub fn with_field(mut self, name: &str, fe: FieldError) -> Self {
        self.data.insert(name.to_string(), fe.to_json());
        self
    }

    /// A failure whose cause is logged (with its whole chain) but never sent: the client
    /// gets only `message`, so no server path or backend detail leaks.
    pub fn logged(
        status: StatusCode,
        message: &'static str,
        cause: &(dyn std::error::Error + 'static),
    ) -> Self {
        tracing::error!(error = %ErrorChain(cause), "{message}");
        Self::new(status, message)
    }

    /// `400` with PocketBase's text for a failed operation (`Failed to create backup.`, ...),
    /// for a failure of the store or the archive: its cause is logged, never sent.
    pub fn failed(message: &'static str, cause: &(dyn std::error::Error + 'static)) -> Self {
        Self::logged(StatusCode::BAD_REQUEST, message, cause)
    }

    /// 500 with PocketBase's generic text; the cause goes to the log only.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        Self::logged(StatusCode::INTERNAL_SERVER_ERROR, MSG_INTERNAL, cause)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn body(&self) -> Value {
        json!({
            "data": Value::Object(self.data.clone()),
            "message": self.message,
            "status": self.status.as_u16(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

/// Displays an error with all its sources, `a: b: c`, for logs.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut src = self.0.source();
        while let Some(s) = src {
            write!(f, ": {s}")?;
            src = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_pocketbase() {
        let e = ApiError::bad_request("Failed to create backup.");
        assert_eq!(
            serde_json::to_string(&e.body()).unwrap(),
            r#"{"data":{},"message":"Failed to create backup.","status":400}"#
        );
    }

    #[test]
    fn validation_errors_carry_codes_and_params() {
        let e = ApiError::validation([(
            "name",
            FieldError::new(
                "validation_length_out_of_range",
                "The length must be between 1 and 150.",
            )
            .with_params(json!({"max": 150, "min": 1})),
        )]);
        assert_eq!(
            serde_json::to_string(&e.body()).unwrap(),
            r#"{"data":{"name":{"code":"validation_length_out_of_range","message":"The length must be between 1 and 150.","params":{"max":150,"min":1}}},"message":"An error occurred while validating the submitted data.","status":400}"#
        );
    }
}
