//! JSON errors with a stable code and a message that names the field.
//!
//! ```text
//!   422 {"error":{"code":"invalid_field","field":"compartments[2].size","message":"…"}}
//! ```

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code (`invalid_field`, `not_found`, `conflict`…).
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The JSON shape of every error: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, body: ErrorBody { code, message: message.into(), field: None } }
    }

    /// A request field with a bad value.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("{field}: {}", message.into());
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: ErrorBody { code: "invalid_field", message, field: Some(field) },
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} {id:?} does not exist"))
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.body.code, self.body.message)
    }
}

/// The error code of a `503` the client should retry after `Retry-After` (the database
/// is busy; nothing was done).
pub const BUSY: &str = "busy";

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.body.code == BUSY {
            response.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
        }
        response.json(ErrorEnvelope { error: self.body.clone() })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            StoreError::Missing { what, .. } => {
                let mut err = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_reference", e.to_string());
                err.body.field = Some(what.to_owned());
                err
            }
            StoreError::Db(ref d) if crate::store::is_busy(d) => {
                tracing::warn!(error = %e, "request refused: the database is busy");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, BUSY, "the database is busy; try again in a moment")
            }
            StoreError::Db(_) => Self::internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;
    use sea_orm::DbErr;
    use sea_orm::error::ConnAcquireErr;

    use super::*;

    fn answer(e: DbErr) -> (StatusCode, Option<String>, String) {
        let response = ApiError::from(StoreError::Db(e)).error_response();
        let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap_or_default().to_owned());
        let status = response.status();
        let body = response.into_body().try_into_bytes().unwrap_or_default();
        (status, retry, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn a_busy_database_is_a_503_to_retry_and_any_other_failure_a_500() {
        let (status, retry, body) = answer(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout));
        assert_eq!((status, retry.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("1")), "{body}");
        assert!(body.contains(r#""code":"busy""#), "{body}");
        let (status, retry, _) = answer(DbErr::Custom("error returned from database: database is locked".into()));
        assert_eq!((status, retry.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("1")));
        // Not worth a retry: a closed pool, a broken statement.
        for e in [DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed), DbErr::Custom("no such table".into())] {
            let (status, retry, body) = answer(e);
            assert_eq!((status, retry), (StatusCode::INTERNAL_SERVER_ERROR, None));
            assert!(body.contains(r#""code":"internal""#), "{body}");
        }
    }
}
