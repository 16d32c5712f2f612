//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, generated (utoipa) from the
//! handlers' annotations and request types; a test checks it against the route table.

use actix_web::HttpResponse;
use utoipa::OpenApi;

use crate::{cluster, groups, members, metrics, queues, records, topics};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Spool HTTP API",
        description = "Topics, records, consumer groups and queues of a Spool broker. Errors are \
                       JSON bodies {\"error_code\": <HTTP status>, \"message\": <text>}."
    ),
    paths(
        crate::healthz,
        crate::readyz,
        metrics::scrape,
        document,
        cluster::status,
        topics::list,
        topics::create,
        topics::describe,
        topics::alter_configs,
        topics::add_partitions,
        topics::delete,
        records::produce,
        records::read,
        groups::list,
        groups::describe,
        groups::reset_offsets,
        groups::delete,
        members::join,
        members::poll,
        members::commit,
        members::describe,
        members::leave,
        queues::send,
        queues::receive,
        queues::ack,
        queues::nack,
        queues::stats,
        queues::declare,
        queues::delete,
    )
)]
pub struct ApiDoc;

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1"))
)]
pub(crate) async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every (method, path) the document describes.
    fn documented() -> BTreeSet<(String, String)> {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect()
    }

    #[test]
    fn the_document_describes_exactly_the_routes_served() {
        let served: BTreeSet<(String, String)> = crate::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let documented = documented();
        let missing: Vec<_> = served.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "served but not documented: {missing:?}; documented but not served: {extra:?}"
        );
    }
}
