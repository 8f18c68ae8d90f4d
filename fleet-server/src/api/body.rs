//! JSON request bodies whose type errors say where they are.
//!
//! `web::Json<T>` reports what was wrong ("invalid type: integer `42`, expected a
//! string at line 1 column 9") but not which field; in a nested body such as a rollout
//! plan that leaves the caller guessing. `Body<T>` reads the body the same way (size
//! limit, content type and syntax errors from the `JsonConfig` in `api::configure`), then
//! maps it onto `T` keeping track of the path:
//!
//! ```text
//!   400 {"error":{"code":"invalid_body","field":"plan.rate.per_minute",
//!                 "message":"request body is not valid: plan.rate.per_minute: invalid type: string \"fast\", expected f64"}}
//! ```

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body of type `T`; a body that does not fit names the field.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T> Body<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Body<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move { Ok(Body(from_value(json.await?.into_inner())?)) })
    }
}

/// `value` as a `T`, or a 400 `invalid_body` naming the path of the first field that
/// does not fit (none when the problem is the body as a whole, like a missing field,
/// whose name the message holds).
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let problem = e.into_inner();
        if path == "." {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("request body is not valid: {problem}"))
        } else {
            let mut err = ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("request body is not valid: {path}: {problem}"),
            );
            err.body.field = Some(path);
            err
        }
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        size: u32,
    }

    #[test]
    fn a_wrong_type_deep_in_the_body_is_named_by_its_path() {
        let err = from_value::<Outer>(json!({"name": "x", "items": [{"size": 1}, {"size": "big"}]})).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.body.code, "invalid_body");
        assert_eq!(err.body.field.as_deref(), Some("items[1].size"));
        assert!(err.body.message.contains("items[1].size: invalid type: string \"big\", expected u32"), "{err}");
    }

    #[test]
    fn problems_of_the_whole_body_have_no_path_but_name_the_field() {
        let err = from_value::<Outer>(json!({"items": []})).unwrap_err();
        assert_eq!(err.body.field, None);
        assert!(err.body.message.contains("missing field `name`"), "{err}");
        let err = from_value::<Outer>(json!({"name": "x", "items": [], "extra": 1})).unwrap_err();
        assert!(err.body.message.contains("unknown field `extra`"), "{err}");
        let fine = from_value::<Outer>(json!({"name": "x", "items": [{"size": 7}]})).unwrap();
        assert_eq!(fine.items[0].size, 7);
    }
}
