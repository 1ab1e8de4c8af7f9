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
pub(super) mod wire;

use std::sync::OnceLock;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::gateway::Gateway;
use wire::{ErrorBody, error};

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
