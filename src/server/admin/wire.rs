//! What every admin route shares: the caller's key and role, JSON bodies
//! and path or query arguments read strictly, and error replies with a
//! stable `code`.

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::admin::AdminError;
use crate::gateway::Gateway;
use crate::identity::{self, AuthError, Principal, Role};
use crate::server::strict_json;
use crate::store::StoreError;

pub const READERS: &[Role] = &[Role::Admin, Role::Auditor];
pub const ADMINS: &[Role] = &[Role::Admin];
pub const ANY_ROLE: &[Role] = &[Role::Admin, Role::Auditor, Role::Approver];

/// Largest JSON body the admin API reads.
pub const MAX_BODY: usize = 256 * 1024;
const MAX_DEPTH: usize = 32;

/// The error body of every admin API failure.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable: `bad_request`, `invalid`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `read_only`, `precondition_failed`,
    /// `too_large`, `unsupported_media_type`, `unavailable`.
    pub code: String,
    pub message: String,
    /// The input field that is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

fn error_with(status: StatusCode, code: &str, message: &str, extra: Value) -> Response {
    let mut body = json!({"code": code, "message": message});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    (status, Json(body)).into_response()
}

/// A handler's failure: any response, or an admin error mapped to one
/// (boxed: it travels through every `?`).
pub struct Failure(Box<Response>);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<Response> for Failure {
    fn from(r: Response) -> Self {
        Failure(Box::new(r))
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::from(AdminError::Store(e))
    }
}

impl From<AdminError> for Failure {
    fn from(e: AdminError) -> Self {
        Failure::from(match e {
            AdminError::Invalid { field, message, errors } => error_with(
                StatusCode::BAD_REQUEST,
                "invalid",
                &format!("{field}: {message}"),
                json!({"field": field, "errors": errors}),
            ),
            AdminError::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", &m),
            AdminError::Conflict { message, file: Some(file) } => {
                error_with(StatusCode::CONFLICT, "read_only", &message, json!({"file": file}))
            }
            AdminError::Conflict { message, file: None } => error(StatusCode::CONFLICT, "conflict", &message),
            AdminError::Stale { message, etag } => {
                let mut r =
                    error_with(StatusCode::PRECONDITION_FAILED, "precondition_failed", &message, json!({"etag": etag}));
                if let Ok(v) = header::HeaderValue::from_str(&etag) {
                    r.headers_mut().insert(header::ETAG, v);
                }
                r
            }
            AdminError::Forbidden(m) => error(StatusCode::FORBIDDEN, "forbidden", &m),
            AdminError::Store(StoreError::Invalid(m)) => error(StatusCode::BAD_REQUEST, "invalid", &m),
            AdminError::Store(e) => {
                tracing::error!("admin API: {e}");
                error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store is unavailable")
            }
        })
    }
}

/// A 400 naming the field.
pub fn invalid(field: &str, message: impl Into<String>) -> Failure {
    Failure::from(AdminError::invalid(field, message))
}

/// The caller, if its key is live and has one of `roles`.
pub async fn caller(gw: &Gateway, headers: &HeaderMap, roles: &[Role]) -> Result<Principal, Response> {
    let secret = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(identity::bearer);
    caller_of(gw, secret, roles).await
}

/// The holder of `secret`, if the key is live and has one of `roles`.
pub async fn caller_of(gw: &Gateway, secret: Option<&str>, roles: &[Role]) -> Result<Principal, Response> {
    let result = match secret {
        Some(s) => gw.authenticate(s).await,
        None => Err(AuthError::Missing),
    };
    match result {
        Ok(p) if p.role.is_some_and(|r| roles.contains(&r)) => Ok(p),
        Ok(_) => Err(error(StatusCode::FORBIDDEN, "forbidden", "this key's role may not do this")),
        Err(AuthError::Store(e)) => {
            tracing::error!("cannot check an admin key: {e}");
            Err(error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the key store is unavailable"))
        }
        Err(e) => {
            let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string());
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            Err(r)
        }
    }
}

/// Reads a JSON body of type `T`: `application/json` (or no content type),
/// at most [`MAX_BODY`] bytes, strict JSON (no duplicate keys, bounded
/// depth), every field typed; errors name the field.
pub async fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, Failure> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence != "application/json" && !(essence.starts_with("application/") && essence.ends_with("+json")) {
            return Err(Failure::from(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be application/json",
            )));
        }
    }
    use http_body_util::BodyExt as _;
    let bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(Failure::from(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!("the body is larger than {MAX_BODY} bytes"),
            )));
        }
        Err(_) => return Err(Failure::from(error(StatusCode::BAD_REQUEST, "bad_request", "could not read the body"))),
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b != b'{')
        && serde_json::from_slice::<Value>(&bytes).is_ok()
    {
        return Err(invalid("body", "must be a JSON object"));
    }
    if let Err(e) = strict_json::check(&bytes, MAX_DEPTH) {
        let m = match e {
            strict_json::Rejection::Parse(m) | strict_json::Rejection::Invalid(m) => m,
        };
        return Err(Failure::from(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("the body is not acceptable JSON: {m}"),
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // Unknown and missing fields are reported at their parent: name them.
        let named = message.split('`').nth(1).filter(|_| message.contains("field `")).map(str::to_string);
        let field = match (path.as_str(), named) {
            ("." | "", Some(n)) => n,
            ("." | "", None) => "body".to_string(),
            // Missing fields are reported at their parent; unknown ones at themselves.
            (p, Some(n)) if message.starts_with("missing field") => format!("{p}.{n}"),
            (p, _) => p.to_string(),
        };
        invalid(&field, message)
    })
}

/// A path segment, or a 400.
pub fn path_arg(
    p: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, Failure> {
    match p {
        Ok(axum::extract::Path(v)) if !v.is_empty() && v.len() <= 256 => Ok(v),
        Ok(_) => Err(invalid("path", "must be 1 to 256 characters")),
        Err(e) => Err(invalid("path", e.body_text())),
    }
}

/// Query parameters, or a 400 naming what is wrong.
pub fn query_arg<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Failure> {
    match q {
        Ok(axum::extract::Query(v)) => Ok(v),
        Err(e) => {
            let text = e.body_text();
            let field = text.split('`').nth(1).unwrap_or("query").to_string();
            Err(invalid(&field, text))
        }
    }
}

/// A JSON answer with status.
pub fn reply(status: StatusCode, body: impl Serialize) -> Response {
    (status, Json(body)).into_response()
}
