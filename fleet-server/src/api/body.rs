//! JSON request bodies whose type errors say where they are.
//!
//! `web::Json<T>` reports what was wrong ("invalid type: integer `42`, expected a
//! string at line 1 column 9") but not which field; in a nested body such as a rollout
//! plan that leaves the caller guessing. `Body<T>` reads the body the same way (size
//! limit, content type and syntax errors from the `JsonConfig` in `api::configure`, into
//! a raw JSON text), then parses that text as `T` keeping track of the path. Parsing the
//! text itself, not a `serde_json::Value`, keeps `T`'s own rules: a field given twice is
//! refused, not silently the last one.
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
use serde_json::value::RawValue;

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
        let json = web::Json::<Box<RawValue>>::from_request(req, payload);
        Box::pin(async move { Ok(Body(from_json(json.await?.get())?)) })
    }
}

/// `text` (valid JSON) as a `T`, or a 400 `invalid_body` naming the path of the first
/// field that does not fit (none when the problem is the body as a whole, like a
/// missing field, whose name the message holds).
pub fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    let invalid = |problem: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", problem);
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let problem = e.into_inner();
        if path == "." {
            invalid(format!("request body is not valid: {problem}"))
        } else {
            let mut err = invalid(format!("request body is not valid: {path}: {problem}"));
            err.body.field = Some(path);
            err
        }
    })?;
    de.end().map_err(|e| invalid(format!("request body is not valid: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

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
        let err = from_json::<Outer>(r#"{"name": "x", "items": [{"size": 1}, {"size": "big"}]}"#).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.body.code, "invalid_body");
        assert_eq!(err.body.field.as_deref(), Some("items[1].size"));
        assert!(err.body.message.contains("items[1].size: invalid type: string \"big\", expected u32"), "{err}");
    }

    #[test]
    fn problems_of_the_whole_body_have_no_path_but_name_the_field() {
        let err = from_json::<Outer>(r#"{"items": []}"#).unwrap_err();
        assert_eq!(err.body.field, None);
        assert!(err.body.message.contains("missing field `name`"), "{err}");
        let err = from_json::<Outer>(r#"{"name": "x", "items": [], "extra": 1}"#).unwrap_err();
        assert!(err.body.message.contains("unknown field `extra`"), "{err}");
        let fine = from_json::<Outer>(r#"{"name": "x", "items": [{"size": 7}]}"#).unwrap();
        assert_eq!(fine.items[0].size, 7);
    }

    #[test]
    fn a_field_given_twice_or_text_after_the_body_is_refused() {
        let err = from_json::<Outer>(r#"{"name": "x", "items": [], "name": "y"}"#).unwrap_err();
        assert!(err.body.message.contains("duplicate field `name`"), "{err}");
        let err = from_json::<Outer>(r#"{"name": "x", "items": []} {"#).unwrap_err();
        assert!(err.body.message.contains("trailing characters"), "{err}");
    }
}
