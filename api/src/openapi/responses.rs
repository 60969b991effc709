//! The answers every route shares, added to the OpenAPI document in one place once every route
//! is in it: each handler's annotation lists the statuses its own code decides (404, 409, 422,
//! 429 …), and this adds the ones that come from the shared extractors and layers, from the
//! operation's shape:
//!
//! - a bearer token ([`crate::auth::Caller`]): 401 `unauthorized`, 403
//!   `profile_company_mismatch`, 503 `auth_unavailable` / `database_unavailable` (the profile
//!   is recorded on first sight, so every authenticated route reaches the database);
//! - path or query parameters ([`crate::extract`]): 400 `invalid_path` / `invalid_query`;
//! - a request body: 400 (broken JSON or multipart) and 413 `payload_too_large`.
//!
//! Every 4xx and 5xx response then references the [`ErrorResponse`] schema, 429 and 503 carry
//! `Retry-After`, and a response documented without a description gets the standard one.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response};

use crate::error::ErrorResponse;

/// The name of the error envelope among the document's schemas.
fn error_ref() -> Ref {
    Ref::from_schema_name(<ErrorResponse as utoipa::ToSchema>::name())
}

/// Completes `doc` as the module documentation says.
pub fn complete(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    let mut schemas = Vec::new();
    <ErrorResponse as utoipa::ToSchema>::schemas(&mut schemas);
    schemas.push((
        <ErrorResponse as utoipa::ToSchema>::name().into_owned(),
        <ErrorResponse as utoipa::PartialSchema>::schema(),
    ));
    for (name, schema) in schemas {
        components.schemas.entry(name).or_insert(schema);
    }
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            complete_operation(op);
        }
    }
}

fn complete_operation(op: &mut Operation) {
    let params = op.parameters.as_deref().unwrap_or_default();
    let has = |place: ParameterIn| params.iter().any(|p| p.parameter_in == place);
    let (path, query) = (has(ParameterIn::Path), has(ParameterIn::Query));
    let body = op.request_body.is_some();
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());

    let mut malformed = Vec::new();
    if path {
        malformed.push(
            "a path parameter that is not UTF-8, not of its type or holds a NUL character \
             (`invalid_path`)",
        );
    }
    if query {
        malformed.push(
            "a query parameter that is not of its type, is repeated or holds a NUL character \
             (`invalid_query`)",
        );
    }
    if body {
        malformed.push("a body that is not valid JSON (`invalid_json`) or multipart");
    }
    let responses = &mut op.responses.responses;
    let mut implied: Vec<(&str, String)> = Vec::new();
    if !malformed.is_empty() {
        implied.push(("400", format!("Malformed: {}.", malformed.join("; "))));
    }
    if body {
        implied.push((
            "413",
            "The body is larger than the route's limit (`payload_too_large`).".into(),
        ));
    }
    if secured {
        implied.push((
            "401",
            "No bearer token, or one that is malformed, expired or not signed by a trusted key \
             (`unauthorized`)."
                .into(),
        ));
        implied.push((
            "403",
            "The token's profile belongs to another company (`profile_company_mismatch`).".into(),
        ));
        implied.push((
            "503",
            "The database cannot be reached (`database_unavailable`) or tokens cannot be checked \
             (`auth_unavailable`); retry after Retry-After seconds."
                .into(),
        ));
    }
    for (status, description) in implied {
        let entry = responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(Response::new("")));
        if let RefOr::T(response) = entry
            && response.description.is_empty()
        {
            response.description = description;
        }
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let code: u16 = status.parse().unwrap_or(0);
        if code < 400 {
            continue;
        }
        if response.description.is_empty() {
            response.description = standard(code).to_string();
        }
        if response.content.is_empty() {
            response.content.insert(
                "application/json".into(),
                Content::new(Some(RefOr::Ref(error_ref()))),
            );
        }
        if matches!(code, 429 | 503) {
            response
                .headers
                .entry("Retry-After".into())
                .or_insert_with(|| {
                    utoipa::openapi::header::HeaderBuilder::new()
                        .schema(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(1)),
                        )
                        .description(Some(
                            "Seconds to wait before trying again (sent with `rate_limited`, \
                             `quota_exceeded`, `database_unavailable` and `auth_unavailable`).",
                        ))
                        .build()
                });
        }
    }
}

/// The description of a status no annotation described.
fn standard(code: u16) -> &'static str {
    match code {
        400 => "Malformed request.",
        401 => "Not authenticated.",
        402 => {
            "The company's plan needs a subscription it does not have (`subscription_required`)."
        }
        403 => "Not allowed.",
        404 => "No such resource (`not_found`).",
        409 => "The resource is not in a state that allows this.",
        413 => "The body is larger than the route's limit (`payload_too_large`).",
        415 => "The body's Content-Type is not one this route takes (`unsupported_media_type`).",
        422 => "A field breaks a documented constraint; `field` names it.",
        429 => "Over a rate limit (`rate_limited`) or a quota (`quota_exceeded`); see Retry-After.",
        503 => "A dependency cannot be reached; retry after Retry-After seconds.",
        _ => "The request failed.",
    }
}
