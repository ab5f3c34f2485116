//! Uploads over HTTP: `POST /api/v1/uploads` stores a file, `GET /api/v1/uploads/{id}` serves it
//! safely (see `uploads.rs` for the rules).

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::Caller;
use crate::chat::message_store::MessageStore;
use crate::chat::upload_store::UploadStore;
use crate::chat::uploads::{self, AttachmentKind};
use crate::net::AppState;
use crate::people::principal::Principal;
use crate::protocol::ParticipantView;

#[derive(Deserialize)]
pub struct UploadQuery {
    conversation_id: Option<u64>,
    name: String,
}

#[derive(Serialize)]
pub struct UploadView {
    id: String,
    url: String,
    name: String,
    size: u64,
    content_type: String,
    kind: AttachmentKind,
}

/// Uploads are the widget's and the console's; they are not part of the API for integrations.
fn refuse_api_tokens(principal: &Principal) -> Result<(), ApiError> {
    match principal {
        Principal::ApiToken(_) => Err(ApiError::Forbidden("uploads are for visitors and agents".into())),
        _ => Ok(()),
    }
}

/// `POST /api/v1/uploads?conversation_id=ID&name=FILE` with the raw file as the body.
pub async fn create(
    State(app): State<AppState>,
    client: crate::net::http::client_address::ClientAddress,
    Caller(principal): Caller,
    Query(query): Query<UploadQuery>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, axum::Json<UploadView>), ApiError> {
    // Over the body limit: our error shape and code, which the widget shows in the visitor's
    // language with the limit, instead of axum's plain English text.
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(format!(
            "the file is larger than the upload limit of {} bytes",
            app.config.limits.max_upload_bytes
        )),
        _ => ApiError::BadRequest(format!("the file could not be read: {}", rejection.body_text())),
    })?;
    let client_ip = client.ip();
    refuse_api_tokens(&principal)?;
    let mut site = match &principal {
        Principal::Visitor(visitor) => Some(visitor.site.clone()),
        _ => None,
    };
    if let Some(conversation_id) = query.conversation_id {
        match MessageStore::conversation(&app.store, conversation_id).await? {
            Some(conversation) if principal.can_access(&conversation) => site = Some(conversation.site),
            _ => return Err(ApiError::NotFound("no such conversation".into())),
        }
    } else if !principal.is_visitor() {
        return Err(ApiError::Unprocessable("conversation_id: required for agents".into()));
    }
    if let Principal::Visitor(visitor) = &principal {
        app.visitor_limits.upload(client_ip, visitor.id, body.len() as u64)?;
    }
    let sender = principal.sender();
    let target = uploads::UploadTarget {
        uploader: ParticipantView { kind: sender.kind, id: sender.id },
        site: site.unwrap_or_default(),
        conversation_id: query.conversation_id,
    };
    let upload =
        UploadStore::store(&app.store, &app.upload_quota, target, query.name, body, app.config.limits.max_upload_bytes)
            .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(UploadView {
            url: upload.url(),
            id: upload.id,
            name: upload.name,
            size: upload.size,
            content_type: upload.content_type,
            kind: upload.kind,
        }),
    ))
}

/// `GET /api/v1/uploads/{id}`: the file, to its uploader and the conversation's participants.
pub async fn fetch(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Caller(principal): Caller,
) -> Result<Response, ApiError> {
    refuse_api_tokens(&principal)?;
    let Some(content) = UploadStore::readable(&app.store, &id, &principal).await? else {
        return Err(ApiError::NotFound("no such upload".into()));
    };
    let upload = content.upload;
    let (content_type, disposition) = match upload.kind {
        AttachmentKind::Image => (upload.content_type.as_str(), "inline"),
        AttachmentKind::File => ("application/octet-stream", "attachment"),
    };
    let upload_id = upload.id.clone();
    // A failure midway cuts the response; its cause is logged here, once.
    let bytes = content
        .bytes
        .inspect_err(move |error| tracing::error!(%error, upload = %upload_id, "reading an upload failed"));
    let mut response = file_response(Body::from_stream(bytes), content_type, "private, max-age=3600");
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(upload.size));
    let disposition = format!(
        "{disposition}; filename*=UTF-8''{}",
        percent_encode(&crate::chat::uploads::display_name(&upload.name))
    );
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).expect("percent-encoded names are ASCII"),
    );
    Ok(response)
}

/// The stored bytes of an upload (an agent's picture), whole.
pub(super) async fn read_file(app: &AppState, upload_id: &str) -> Result<Vec<u8>, ApiError> {
    let missing = || ApiError::Internal(format!("reading upload {upload_id}: its bytes are gone"));
    let mut parts = UploadStore::bytes(&app.store, upload_id).await?.ok_or_else(missing)?;
    let mut bytes = Vec::new();
    while let Some(part) = parts.next().await {
        bytes.extend_from_slice(&part?);
    }
    Ok(bytes)
}

/// A file served to a browser as `content_type`, cached as `cache_control` says. Sandboxed: an
/// uploaded file never runs as a page of kefu's origin.
pub(super) fn file_response(body: impl Into<Body>, content_type: &str, cache_control: &'static str) -> Response {
    let mut response = body.into().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    response
}

/// RFC 5987 encoding of a file name for `Content-Disposition`.
fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
