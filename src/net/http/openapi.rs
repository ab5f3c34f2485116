//! The API for integrations (API tokens) and its OpenAPI 3.1 document, generated from the
//! handlers' `#[utoipa::path]` annotations.
//!
//! [`token_api`] registers each of those handlers once, through `utoipa_axum`, which adds the
//! route to the router and the operation to the document from the same annotation: a route
//! cannot be served without being documented, or documented without being served. The document
//! is rendered once at start and served at `/api/v1/openapi.json`. The integration tests request
//! every documented operation with a token and check each answer against its schema.

use axum::http::header;
use axum::response::IntoResponse;
use bytes::Bytes;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{conversations_api, history_api, knowledge_base_api, leads_api, staff_api, visitors_api};
use crate::net::AppState;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kefu API",
        version = "1",
        description = "The HTTP API for integrations. Authenticate with an API token made in the admin pages \
(`/admin/api-tokens`): `Authorization: Bearer k1....`. A token sees one site; a read-only token may only \
GET. Every error is `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}`. Each token may make \
`limits.api_requests_per_second` requests per second (with a burst of `limits.api_request_burst`); \
past that the answer is 429 with `Retry-After`."
    ),
    modifiers(&BearerToken),
    security(("api_token" = [])),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// Adds the bearer-token security scheme the document's `security` names.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token (`k1.` followed by 43 characters) from the admin pages"))
                    .build(),
            ),
        );
    }
}

/// The error answers any operation may give, each with the one error shape.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only its derived documentation is used.
pub enum CommonErrors {
    /// The request cannot be read (bad JSON, wrong content type).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No token, or an unknown or revoked one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// A token of another site, a read-only token on a change, or an operation the caller may not do.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such conversation, visitor, entry or site.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The state does not allow it (a closed conversation, an already assigned one).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// A field is invalid; the message names it.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// The token's request budget is spent; retry after `Retry-After` seconds.
    #[response(status = 429)]
    TooManyRequests(ErrorBody),
}

/// The routes API tokens may use, with their document.
pub fn token_api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(conversations_api::list))
        .routes(routes!(conversations_api::get))
        .routes(routes!(conversations_api::assign))
        .routes(routes!(conversations_api::transfer))
        .routes(routes!(conversations_api::close))
        .routes(routes!(conversations_api::reopen))
        .routes(routes!(conversations_api::messages, conversations_api::send_message))
        .routes(routes!(leads_api::list))
        .routes(routes!(leads_api::get))
        .routes(routes!(leads_api::set_status))
        .routes(routes!(leads_api::assign))
        .routes(routes!(leads_api::reply))
        .routes(routes!(visitors_api::visitor_profile))
        .routes(routes!(visitors_api::update_visitor_attributes))
        .routes(routes!(visitors_api::block_visitor))
        .routes(routes!(visitors_api::export_visitor_data, visitors_api::erase_visitor_data))
        .routes(routes!(staff_api::list_agents))
        .routes(routes!(staff_api::list_teams))
        .routes(routes!(knowledge_base_api::list, knowledge_base_api::create))
        .routes(routes!(knowledge_base_api::update, knowledge_base_api::delete))
        .routes(routes!(knowledge_base_api::import))
        .routes(routes!(knowledge_base_api::export))
        .routes(routes!(history_api::search))
        .routes(routes!(history_api::export))
}

/// The token API's routes, and the route that serves their document.
pub fn token_api_router() -> axum::Router<AppState> {
    let (router, openapi) = token_api().split_for_parts();
    let document = Bytes::from(openapi.to_pretty_json().expect("an OpenAPI document always serializes"));
    router.route(
        DOCUMENT_PATH,
        axum::routing::get(move || {
            let document = document.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], document).into_response() }
        }),
    )
}
