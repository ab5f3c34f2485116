//! Web Push for the logged-in agent: the VAPID public key the console subscribes with, and the
//! agent's own subscriptions (one per browser), added and removed. An agent only ever sees and
//! removes their own.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Caller, Json, agent_only};
use crate::base::language::Lang;
use crate::net::AppState;
use crate::push::subscriptions::{self, NewSubscription, PushSubscriptionStore, SubscriptionError};

impl From<SubscriptionError> for ApiError {
    fn from(error: SubscriptionError) -> Self {
        match error {
            SubscriptionError::Invalid(error) => ApiError::Unprocessable(error.to_string()),
            SubscriptionError::NotFound => ApiError::NotFound(error.to_string()),
            SubscriptionError::Storage(error) => error.into(),
        }
    }
}

#[derive(Serialize)]
pub struct PushKey {
    /// The VAPID public key, base64url: `applicationServerKey` of `PushManager.subscribe`.
    public_key: String,
}

/// `GET /api/v1/push/key`
pub async fn key(State(app): State<AppState>, Caller(principal): Caller) -> Result<axum::Json<PushKey>, ApiError> {
    agent_only(principal)?;
    Ok(axum::Json(PushKey { public_key: app.push.public_key().to_owned() }))
}

/// A subscription as the agent sees it (the keys stay on the server).
#[derive(Serialize)]
pub struct SubscriptionView {
    endpoint: String,
    language: Lang,
    created_at: i64,
}

/// `GET /api/v1/push/subscriptions`: the caller's.
pub async fn list(
    State(app): State<AppState>,
    Caller(principal): Caller,
) -> Result<axum::Json<Vec<SubscriptionView>>, ApiError> {
    let agent = agent_only(principal)?;
    let found = app.store.subscriptions_of(agent.id).await?;
    Ok(axum::Json(
        found
            .into_iter()
            .map(|subscription| SubscriptionView {
                endpoint: subscription.endpoint,
                language: subscription.language,
                created_at: subscription.created_at,
            })
            .collect(),
    ))
}

/// `POST /api/v1/push/subscriptions`: `PushSubscription.toJSON()` plus `language`; posting the
/// same endpoint again updates its language.
pub async fn subscribe(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Json(request): Json<NewSubscription>,
) -> Result<(StatusCode, axum::Json<SubscriptionView>), ApiError> {
    let agent = agent_only(principal)?;
    let saved = subscriptions::save(&app.store, &app.push, agent.id, request).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(SubscriptionView {
            endpoint: saved.endpoint,
            language: saved.language,
            created_at: saved.created_at,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unsubscribe {
    endpoint: String,
}

/// `DELETE /api/v1/push/subscriptions` with `{"endpoint": ...}`: 404 unless it is the caller's.
pub async fn unsubscribe(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Json(request): Json<Unsubscribe>,
) -> Result<StatusCode, ApiError> {
    let agent = agent_only(principal)?;
    app.store.remove_subscription(agent.id, request.endpoint).await?;
    Ok(StatusCode::NO_CONTENT)
}
