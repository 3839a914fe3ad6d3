//! `POST /api/collections/_superusers/records` for the first-run link only
//! ([`crate::auth::installer`]): the page's install screen sends what PocketBase's sends (the
//! link's token as `Authorization`, `email`, `password`, `passwordConfirm`) and gets
//! PocketBase's answer (the new record, or its validation errors). With any other
//! authorization the gateway creates no superuser here (they are managed with `backup-gateway
//! superuser`), and answers as PocketBase answers a caller who may not create one.

use super::body::{BindError, PbBody};
use crate::AppState;
use crate::error::{ApiError, FieldError};
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;

/// PocketBase's answer to a create without the right to it.
pub const MSG_ONLY_SUPERUSERS: &str = "Only superusers can perform this action.";
const MSG_CREATE: &str = "Failed to create record.";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NewSuperuser {
    email: String,
    password: String,
    /// `passwordConfirm` (keys are bound without regard to case, see [`PbBody`]).
    #[serde(rename = "passwordconfirm")]
    password_confirm: String,
}

/// POST /api/collections/_superusers/records
pub async fn create_first_superuser(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Result<PbBody<NewSuperuser>, BindError>,
) -> Result<Json<Value>, ApiError> {
    let token = crate::auth::bearer_token(&headers)
        .unwrap_or("")
        .to_string();
    let now = state.config.clock.now();
    if !state.installer.accepts(&token, now) {
        return Err(ApiError::forbidden(MSG_ONLY_SUPERUSERS));
    }
    let PbBody(body) = body.map_err(BindError::passed_through)?;
    let errors = validate(&body);
    if !errors.is_empty() {
        return Err(ApiError::bad_request(MSG_CREATE).with_data(errors));
    }
    let user = tokio::task::spawn_blocking(move || {
        // Held until the superuser is saved: two uses of one link create one superuser.
        let Some(claim) = state.installer.claim(&token, now) else {
            return Err(ApiError::forbidden(MSG_ONLY_SUPERUSERS));
        };
        let users = state.tokens.users();
        let current = users.current().map_err(|e| ApiError::internal(&e))?;
        if !current.superusers.is_empty() {
            // Created meanwhile (the environment, `superuser upsert`): the link is done.
            claim.spend();
            return Err(ApiError::forbidden(MSG_ONLY_SUPERUSERS));
        }
        let user = users
            .upsert(&body.email, &body.password)
            .map_err(|e| ApiError::failed(MSG_CREATE, &e))?;
        claim.spend();
        tracing::info!(email = %user.email, "first superuser created through the first-run link");
        Ok(user)
    })
    .await
    .map_err(|e| ApiError::internal(&e))??;
    Ok(Json(super::auth::record(&user)))
}

/// PocketBase's checks of the fields, with its codes and messages.
fn validate(body: &NewSuperuser) -> serde_json::Map<String, Value> {
    let mut errors = serde_json::Map::new();
    let mut put = |name: &str, e: FieldError| {
        errors.insert(name.to_string(), e.to_json());
    };
    let email = body.email.trim();
    if email.is_empty() {
        put("email", FieldError::required());
    } else if !crate::auth::users::is_plausible_email(email) {
        put(
            "email",
            FieldError::new("validation_is_email", "Must be a valid email address."),
        );
    }
    let len = body.password.chars().count();
    if len == 0 {
        put("password", FieldError::required());
    } else if len < crate::auth::users::MIN_PASSWORD_CHARS {
        put(
            "password",
            FieldError::new(
                "validation_min_text_constraint",
                format!(
                    "Must be at least {} character(s).",
                    crate::auth::users::MIN_PASSWORD_CHARS
                ),
            )
            .with_params(serde_json::json!({"min": crate::auth::users::MIN_PASSWORD_CHARS})),
        );
    }
    if body.password_confirm.is_empty() {
        put("passwordConfirm", FieldError::required());
    } else if body.password_confirm != body.password {
        put(
            "passwordConfirm",
            FieldError::new("validation_values_mismatch", "Values don't match."),
        );
    }
    errors
}
