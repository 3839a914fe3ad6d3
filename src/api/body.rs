//! Request bodies bound the way PocketBase's `BindBody` binds them (`tools/router/event.go`):
//!
//! - no body (`Content-Length: 0`): nothing is bound, every field keeps its default;
//! - `application/json`: one JSON value (what follows it is ignored, as Go's decoder does);
//!   keys match field names without regard to ASCII case, the last match wins; `null`
//!   leaves a field as it is; a value of the wrong type is refused;
//! - `multipart/form-data` and `application/x-www-form-urlencoded`: the first value of each
//!   name, with the URL's query values after the body's (before them for multipart, as in
//!   Go's `ParseMultipartForm`), and a multipart `@jsonPayload` part bound as JSON on top;
//! - any other type (`text/plain`, none) is refused: [`BindError::UnsupportedType`].
//!
//! A refusal answers `400 An error occurred while loading the submitted data.`; the routes
//! that pass PocketBase's own error through take `Result<PbBody<T>, BindError>` and answer
//! [`BindError::UnsupportedType`] with `400 Unsupported Content-Type.`

use crate::error::ApiError;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde_json::{Map, Value};

/// A body bound like PocketBase's `BindBody`; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct PbBody<T>(pub T);

/// Why a body was not bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    /// Not JSON, multipart or a urlencoded form.
    UnsupportedType,
    /// The body does not parse, or a value has the wrong type.
    Load,
}

impl BindError {
    /// PocketBase's answer where its own error is passed through (the auth routes).
    pub fn passed_through(self) -> ApiError {
        match self {
            Self::UnsupportedType => ApiError::bad_request("Unsupported Content-Type."),
            Self::Load => ApiError::load_failed(),
        }
    }
}

impl axum::response::IntoResponse for BindError {
    fn into_response(self) -> axum::response::Response {
        ApiError::load_failed().into_response()
    }
}

/// The multipart part whose JSON is bound over the form values (the SDKs send objects so).
const JSON_PAYLOAD: &str = "@jsonPayload";

impl<S, T> FromRequest<S> for PbBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = BindError;

    async fn from_request(req: Request, state: &S) -> Result<Self, BindError> {
        let headers = req.headers();
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok());
        let chunked = headers.contains_key(header::TRANSFER_ENCODING);
        if length == Some("0") || (length.is_none() && !chunked) {
            return Ok(Self(T::default()));
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let query = req.uri().query().map(str::to_string);
        let fields = if content_type.starts_with("application/json") {
            let bytes = axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|_| BindError::Load)?;
            json_fields(&bytes)?
        } else if content_type.starts_with("multipart/form-data") {
            let multipart = Multipart::from_request(req, state)
                .await
                .map_err(|_| BindError::Load)?;
            multipart_fields(multipart, query.as_deref()).await?
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            let bytes = axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|_| BindError::Load)?;
            let mut values = FormValues::default();
            values.extend(form_urlencoded::parse(&bytes));
            if let Some(q) = &query {
                values.extend(form_urlencoded::parse(q.as_bytes()));
            }
            values.into_fields()
        } else {
            return Err(BindError::UnsupportedType);
        };
        serde_json::from_value(Value::Object(fields))
            .map(Self)
            .map_err(|_| BindError::Load)
    }
}

/// A JSON body as it is (the first value; what follows is ignored, as Go's decoder does),
/// for bodies merged into existing values (`PATCH /api/settings`), where a `null` counts.
///
/// # Errors
/// [`BindError::Load`] when it does not parse.
pub fn json_value(bytes: &[u8]) -> Result<Value, BindError> {
    match serde_json::Deserializer::from_slice(bytes)
        .into_iter::<Value>()
        .next()
    {
        Some(Ok(v)) => Ok(v),
        None => Ok(Value::Null),
        Some(Err(_)) => Err(BindError::Load),
    }
}

/// The fields of a JSON body: key case folded, nulls dropped (see the module docs).
fn json_fields(bytes: &[u8]) -> Result<Map<String, Value>, BindError> {
    let first = serde_json::Deserializer::from_slice(bytes)
        .into_iter::<Option<OrderedObject>>()
        .next();
    match first {
        Some(Ok(Some(OrderedObject(pairs)))) => Ok(fold(pairs)),
        Some(Ok(None)) => Ok(Map::new()),
        _ => Err(BindError::Load),
    }
}

fn fold(pairs: Vec<(String, Value)>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in pairs {
        if !v.is_null() {
            out.insert(k.to_ascii_lowercase(), v);
        }
    }
    out
}

/// A JSON object's members in document order.
struct OrderedObject(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for OrderedObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, Value>()? {
                    pairs.push(pair);
                }
                Ok(OrderedObject(pairs))
            }
        }
        d.deserialize_map(V)
    }
}

async fn multipart_fields(
    mut multipart: Multipart,
    query: Option<&str>,
) -> Result<Map<String, Value>, BindError> {
    let mut values = FormValues::default();
    if let Some(q) = query {
        values.extend(form_urlencoded::parse(q.as_bytes()));
    }
    let mut payloads = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(|_| BindError::Load)? {
        // Files are not form values.
        if field.file_name().is_some() {
            continue;
        }
        let name = field.name().unwrap_or_default().to_string();
        let text = field.text().await.map_err(|_| BindError::Load)?;
        if name == JSON_PAYLOAD {
            payloads.push(text);
        } else {
            values.push(name, text);
        }
    }
    let mut fields = values.into_fields();
    for payload in payloads {
        fields.extend(json_fields(payload.as_bytes())?);
    }
    Ok(fields)
}

/// Form values by name, first one kept.
#[derive(Default)]
struct FormValues(Map<String, Value>);

impl FormValues {
    fn push(&mut self, name: String, value: String) {
        self.0.entry(name).or_insert(Value::String(value));
    }

    fn extend<'a>(
        &mut self,
        pairs: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
    ) {
        for (k, v) in pairs {
            self.push(k.into_owned(), v.into_owned());
        }
    }

    fn into_fields(self) -> Map<String, Value> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_binds_like_go() {
        let f = json_fields(br#"{"Name": "a.zip", "NAME": "b.zip"} trailing"#).unwrap();
        assert_eq!(f.get("name"), Some(&Value::from("b.zip")));
        assert!(json_fields(b"null").unwrap().is_empty());
        assert!(json_fields(br#"{"name": null}"#).unwrap().is_empty());
        for bad in [&b"   "[..], b"[]", b"\"x\"", b"{nope", b"12"] {
            assert_eq!(
                json_fields(bad).unwrap_err(),
                BindError::Load,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn form_values_keep_the_first() {
        let mut v = FormValues::default();
        v.extend(form_urlencoded::parse(b"name=a.zip&name=b.zip&x=1"));
        v.extend(form_urlencoded::parse(b"name=q.zip"));
        assert_eq!(v.into_fields().get("name"), Some(&Value::from("a.zip")));
    }
}
