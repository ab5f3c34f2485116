//! Admin form posts: the admin check, the CSRF token, the origin, and the submitted fields.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{AdminDenied, AdminUser};
use crate::base::field_error::FieldError;
use crate::net::AppState;

/// The name of the hidden field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// A form post by an admin with a valid CSRF token from kefu's own pages.
pub struct AdminPost {
    pub admin: AdminUser,
    pub form: FormData,
}

impl FromRequest<AppState> for AdminPost {
    type Rejection = Response;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let admin = AdminUser::from_request_parts(&mut parts, app).await.map_err(IntoResponse::into_response)?;
        // A browser names the page a post comes from; it must be one of kefu's.
        if let Some(origin) = parts.headers.get(header::ORIGIN).and_then(|value| value.to_str().ok())
            && !origin.eq_ignore_ascii_case(&crate::net::http::own_origin(&parts.headers))
        {
            return Err(AdminDenied::Forbidden(admin.lang, admin.t().form_from_elsewhere).into_response());
        }
        let request = Request::from_parts(parts, body);
        let axum::Form(fields) =
            axum::Form::<Vec<(String, String)>>::from_request(request, app).await.map_err(|rejection| {
                super::message_page(admin.lang, rejection.status(), admin.t().form_unreadable, &rejection.body_text())
            })?;
        let form = FormData(fields);
        if form.text(CSRF_FIELD) != admin.csrf {
            return Err(AdminDenied::Forbidden(admin.lang, admin.t().form_expired).into_response());
        }
        Ok(AdminPost { admin, form })
    }
}

/// The fields of a submitted form, in order (a name may repeat, as checkboxes do).
pub struct FormData(pub Vec<(String, String)>);

impl FormData {
    /// The first value of `name`, or empty.
    pub fn text(&self, name: &str) -> String {
        self.0.iter().find(|(field, _)| field == name).map(|(_, value)| value.clone()).unwrap_or_default()
    }

    /// The first value of `name`, or `None` when the form did not send it (a partial update).
    pub fn value(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(field, _)| field == name).map(|(_, value)| value.clone())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(field, _)| field == name).map(|(_, value)| value.clone()).collect()
    }

    /// Whether a checkbox `name` was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(field, value)| field == name && !value.is_empty())
    }

    /// Non-empty trimmed lines of a textarea.
    pub fn lines(&self, name: &str) -> Vec<String> {
        self.text(name).lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_owned).collect()
    }
}

/// Problems with a submitted form, per field, shown next to the fields.
#[derive(Default)]
pub struct FieldErrors(pub Vec<(String, String)>);

impl FieldErrors {
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push((field.to_owned(), message.into()));
    }

    /// A domain's validation error, next to the field it names.
    pub fn add_error(&mut self, error: FieldError) {
        self.add(error.field, error.message);
    }

    /// The message for `field`, or empty.
    pub fn of(&self, field: &str) -> &str {
        self.0.iter().find(|(name, _)| name == field).map_or("", |(_, message)| message.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
