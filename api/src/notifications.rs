//! `GET/PUT /api/notifications/preferences`: which emails the caller receives. Mails about
//! failed payments are transactional and cannot be turned off.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, Type};
use voxline_domain::audit;
use voxline_domain::notifications::{self, EmailKind};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

#[derive(Debug, Serialize, ToSchema)]
pub struct Preference {
    /// feedback_ready, payment_failed, payment_action_required, trial_ending,
    /// subscription_cancelled or data_export_ready.
    pub kind: String,
    pub enabled: bool,
    /// Cannot be turned off.
    pub mandatory: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreferencesResponse {
    pub preferences: Vec<Preference>,
}

/// The body of `PUT /api/notifications/preferences`: kind → enabled, for any of the kinds
/// (built from [`EmailKind::ALL`], so a new kind is documented as it is added). Mandatory kinds
/// take only `true`; another key is a 422 `unknown_kind`.
pub struct PreferenceChanges;

impl utoipa::PartialSchema for PreferenceChanges {
    fn schema() -> RefOr<Schema> {
        let mut object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Kind → enabled; kinds left out keep their value. Mandatory kinds (about failed \
                 payments) cannot be turned off.",
            ))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for kind in EmailKind::ALL {
            let mut property = ObjectBuilder::new().schema_type(Type::Boolean);
            if kind.is_mandatory() {
                property = property
                    .enum_values(Some([true]))
                    .description(Some("Mandatory: only `true`."));
            }
            object = object.property(kind.as_str(), property);
        }
        RefOr::T(Schema::Object(object.build()))
    }
}

impl ToSchema for PreferenceChanges {}

async fn current(state: &AppState, caller: &Caller) -> Result<Json<PreferencesResponse>, ApiError> {
    let prefs = notifications::preferences(&state.db, &caller.0.company_id, &caller.0.sub).await?;
    Ok(Json(PreferencesResponse {
        preferences: prefs
            .into_iter()
            .map(|(kind, enabled)| Preference {
                kind: kind.to_string(),
                enabled,
                mandatory: kind.is_mandatory(),
            })
            .collect(),
    }))
}

/// The caller's email preferences, every kind listed.
#[utoipa::path(get, path = "/api/notifications/preferences", tag = "notifications", operation_id = "get_preferences",
    responses((status = 200, body = PreferencesResponse, description = "Every kind with its setting.")), security(("bearer" = [])))]
pub async fn get_preferences(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PreferencesResponse>, ApiError> {
    current(&state, &caller).await
}

/// Turns kinds on or off: a JSON object of kind → true/false; kinds left out keep their value.
#[utoipa::path(put, path = "/api/notifications/preferences", tag = "notifications", operation_id = "put_preferences",
    request_body(content = PreferenceChanges, content_type = "application/json", description = "kind → enabled, e.g. {\"trial_ending\": false}"),
    responses((status = 200, body = PreferencesResponse, description = "Every kind with its setting, after the change."),
              (status = 400, description = "Malformed: a body that is not valid JSON (`invalid_json`)."),
              (status = 415, description = "The body is not application/json (`unsupported_media_type`)."),
              (status = 422, description = "Not an object (`invalid_preferences`), an unknown kind (`unknown_kind`), a value that is not true or false (`invalid_value`), or a mandatory kind turned off (`mandatory_kind`); `field` names the kind.")),
    security(("bearer" = [])))]
pub async fn put_preferences(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<PreferencesResponse>, ApiError> {
    let Json(body) = body.map_err(ApiError::from)?;
    let object = body.as_object().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_preferences",
            "expected an object of kind → true/false",
        )
    })?;
    let mut changes = BTreeMap::new();
    for (key, value) in object {
        let kind: EmailKind = key.parse().map_err(|e: String| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_kind", e).field(key.clone())
        })?;
        let enabled = value.as_bool().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_value",
                format!("{key} must be true or false"),
            )
            .field(key.clone())
        })?;
        if kind.is_mandatory() && !enabled {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "mandatory_kind",
                format!("{key} emails are about failed payments and cannot be turned off"),
            )
            .field(key.clone()));
        }
        changes.insert(kind, enabled);
    }
    let claims = &caller.0;
    notifications::set_preferences(&state.db, &claims.company_id, &claims.sub, &changes).await?;
    let details: serde_json::Map<String, serde_json::Value> = changes
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect();
    audit::append(
        &state.db,
        &claims.audit_entry(
            "preferences.update",
            &format!("profile:{}", claims.sub),
            details.into(),
        ),
    )
    .await?;
    current(&state, &caller).await
}
