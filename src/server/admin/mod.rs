//! `/admin/v1`: the operator's JSON API. Every request authenticates with a
//! key that has a role, and sees only its own org (another org's resource
//! answers 404, as if it did not exist). Errors are JSON `{code, message}`
//! with a stable `code` (and `field` when one input field is wrong).
//!
//! The routes and the OpenAPI document at `/admin/v1/openapi.json` come
//! from the same list (`utoipa_axum::routes!`), so the document covers
//! every route by construction.

mod budgets;
mod grants;
mod keys;
mod ops;

use std::sync::OnceLock;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::AdminError;
use crate::gateway::Gateway;
use crate::identity::{self, AuthError, Principal, Role};
use crate::store::StoreError;

pub const READERS: &[Role] = &[Role::Admin, Role::Auditor];
pub const ADMINS: &[Role] = &[Role::Admin];
pub const ANY_ROLE: &[Role] = &[Role::Admin, Role::Auditor, Role::Approver];

/// Largest JSON body the admin API reads.
pub const MAX_BODY: usize = 256 * 1024;
const MAX_DEPTH: usize = 32;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tollgate admin API",
        version = "1",
        description = "Grants, keys, teams, budgets, approvals, audit, catalog and tool pins of one org. \
                       Authenticate with `Authorization: Bearer <key>` of a key with a role."
    ),
    servers((url = "/admin/v1")),
    modifiers(&Bearer),
    components(schemas(ErrorBody))
)]
struct Doc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}

/// The admin API, to be nested at `/admin/v1`.
pub fn router(gw: Gateway) -> axum::Router {
    let (router, _) = parts();
    router.fallback(no_route).with_state(gw)
}

fn parts() -> (axum::Router<Gateway>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(Doc::openapi())
        .routes(routes!(grants::list, grants::create))
        .routes(routes!(grants::one, grants::replace, grants::remove))
        .routes(routes!(grants::revisions))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::one, keys::revoke))
        .routes(routes!(keys::teams))
        .routes(routes!(keys::team))
        .routes(routes!(budgets::list))
        .routes(routes!(budgets::one, budgets::put))
        .routes(routes!(budgets::topup))
        .routes(routes!(ops::approvals))
        .routes(routes!(ops::approval))
        .routes(routes!(ops::decide))
        .routes(routes!(ops::audit))
        .routes(routes!(ops::export))
        .routes(routes!(ops::catalog))
        .routes(routes!(ops::pins))
        .routes(routes!(ops::accept))
        .routes(routes!(ops::unpin))
        .routes(routes!(openapi_json))
        .split_for_parts();
    open_views(&mut doc);
    describe_responses(&mut doc);
    (router, doc)
}

/// What OpenAPI requires and the route attributes leave out: every response
/// has a description (one without words of its own gets its status's reason
/// phrase, "Not Found"), and operation ids are unique (utoipa takes the
/// handler's name, and `grants::list` and `keys::list` are both `list`: the
/// path's first segment is put before it, `grants_list`).
fn describe_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    for (path, item) in doc.paths.paths.iter_mut() {
        let area = path.trim_start_matches('/').split('/').next().unwrap_or("").replace(['.', '-'], "_");
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        for op in operations.into_iter().flatten() {
            if let Some(id) = op.operation_id.as_mut()
                && !area.is_empty()
                && !id.starts_with(&format!("{area}_"))
            {
                *id = format!("{area}_{id}");
            }
            for (status, response) in &mut op.responses.responses {
                if let RefOr::T(r) = response
                    && r.description.trim().is_empty()
                {
                    r.description = status
                        .parse::<u16>()
                        .ok()
                        .and_then(|s| http::StatusCode::from_u16(s).ok())
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("Response")
                        .to_string();
                }
            }
        }
    }
}

/// Views flatten a request type that refuses unknown fields; in a view the
/// parts are open (the view adds its own fields). Done after the routes'
/// schemas have joined the document.
fn open_views(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, schema::Schema};
    let Some(components) = doc.components.as_mut() else { return };
    for schema in components.schemas.values_mut() {
        if let RefOr::T(Schema::AllOf(all)) = schema {
            for part in &mut all.items {
                if let RefOr::T(Schema::Object(o)) = part {
                    o.additional_properties = None;
                }
            }
        }
    }
}

/// The OpenAPI document of this API, as served.
pub fn openapi() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| parts().1.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")))
}

/// The OpenAPI 3.1 document of the admin API.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi()).into_response()
}

async fn no_route() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such admin API route")
}

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

pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response {
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
pub(super) async fn caller(gw: &Gateway, headers: &HeaderMap, roles: &[Role]) -> Result<Principal, Response> {
    let secret = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(identity::bearer);
    caller_of(gw, secret, roles).await
}

/// The holder of `secret`, if the key is live and has one of `roles`.
pub(super) async fn caller_of(gw: &Gateway, secret: Option<&str>, roles: &[Role]) -> Result<Principal, Response> {
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
    if let Err(e) = super::strict_json::check(&bytes, MAX_DEPTH) {
        let m = match e {
            super::strict_json::Rejection::Parse(m) | super::strict_json::Rejection::Invalid(m) => m,
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
