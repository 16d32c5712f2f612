//! Spool's HTTP front end: `GET /healthz` (the process is up), `GET /readyz` (the store is
//! recovered, the listeners are bound and the node is a live member of its cluster) and `GET /metrics` (Prometheus
//! text). Errors are JSON bodies `{"error_code": ..., "message": ...}`.

mod cluster;
mod errors;
#[cfg(debug_assertions)]
mod faults;
mod groups;
mod members;
mod metrics;
mod openapi;
mod payload;
mod queues;
mod records;
mod topics;

/// Stops the server started by [`server`] (what the broker's shutdown uses).
pub use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer, Resource};
use serde_json::json;
use spool_actors::Broker;

use errors::error;
use spool_metrics::live::{self, Frontend};

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "The process is up",
    responses((status = 200, description = "OK"))
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "up"}))
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "The store is recovered, the listeners are bound and the node is a live member of its cluster",
    responses(
        (status = 200, description = "OK"),
        (status = 503, description = "Shutting down, or not (or no longer) registered with the cluster's metadata")
    )
)]
async fn readyz(broker: web::Data<Broker>) -> HttpResponse {
    let unavailable = |why: &str| error(StatusCode::SERVICE_UNAVAILABLE, why.to_string());
    if broker.shutdown.begun() {
        return unavailable("shutting down");
    }
    let me = u64::try_from(broker.config.node_id).unwrap_or(u64::MAX);
    let live = broker
        .cluster
        .metadata()
        .borrow()
        .metadata
        .nodes
        .get(&me)
        .map(|n| !n.fenced);
    match live {
        Some(true) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Some(false) => unavailable("fenced by the controller; registering again"),
        None => unavailable("not registered with the cluster's metadata yet"),
    }
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error(
        actix_web::http::StatusCode::NOT_FOUND,
        format!("no route for {} {}", req.method(), req.path()),
    )
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    error(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not served on {}", req.method(), req.path()),
    )
}

/// A route whose other methods answer 405 with a JSON body.
fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// Largest JSON body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// JSON bodies: bounded, and refused with a JSON error (400, or 413 when too large).
fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _| {
            let status = match &err {
                actix_web::error::JsonPayloadError::Overflow { .. }
                | actix_web::error::JsonPayloadError::OverflowKnownLength { .. } => {
                    actix_web::http::StatusCode::PAYLOAD_TOO_LARGE
                }
                _ => actix_web::http::StatusCode::BAD_REQUEST,
            };
            let message = err.to_string();
            actix_web::error::InternalError::from_response(err, error(status, message)).into()
        })
}

/// A path or query that does not parse: 400 with a JSON body.
fn bad_input<E: actix_web::ResponseError + 'static>(err: E, _: &HttpRequest) -> actix_web::Error {
    let message = err.to_string();
    actix_web::error::InternalError::from_response(
        err,
        error(actix_web::http::StatusCode::BAD_REQUEST, message),
    )
    .into()
}

/// Declares the route table once: the actix registration and [`ROUTES`] (which the OpenAPI
/// document is checked against) come from the same lines.
macro_rules! routes {
    ($($path:literal => { $($method:ident: $handler:path),+ }),+ $(,)?) => {
        /// Every route served, as (method, path pattern).
        pub const ROUTES: &[(&str, &str)] = &[$($((stringify!($method), $path)),+),+];

        fn register(cfg: &mut web::ServiceConfig) {
            $(cfg.service(resource($path)$(.route(web::$method().to($handler)))+);)+
        }
    };
}

routes! {
    "/healthz" => { get: healthz },
    "/readyz" => { get: readyz },
    "/metrics" => { get: metrics::scrape },
    "/openapi.json" => { get: openapi::document },
    "/cluster" => { get: cluster::status },
    "/topics" => { get: topics::list, post: topics::create },
    "/topics/{topic}" => { get: topics::describe, delete: topics::delete },
    "/topics/{topic}/configs" => { patch: topics::alter_configs },
    "/topics/{topic}/partitions" => { post: topics::add_partitions },
    "/topics/{topic}/records" => { post: records::produce },
    "/topics/{topic}/partitions/{partition}/records" => { get: records::read },
    "/groups" => { get: groups::list },
    "/groups/{group}" => { get: groups::describe, delete: groups::delete },
    "/groups/{group}/offsets/reset" => { post: groups::reset_offsets },
    "/groups/{group}/members" => { post: members::join },
    "/groups/{group}/members/{member}" => { get: members::describe, delete: members::leave },
    "/groups/{group}/members/{member}/records" => { get: members::poll },
    "/groups/{group}/members/{member}/offsets" => { post: members::commit },
    "/queues/{queue}" => { get: queues::stats, put: queues::declare, delete: queues::delete },
    "/queues/{queue}/messages" => { post: queues::send },
    "/queues/{queue}/receive" => { post: queues::receive },
    "/queues/{queue}/ack" => { post: queues::ack },
    "/queues/{queue}/nack" => { post: queues::nack },
}

/// The HTTP server on an already bound listener; it runs when awaited (or spawned) inside an
/// actix runtime.
///
/// The server installs no signal handlers: the broker's shutdown stops it (with
/// `ServerHandle::stop(true)`), letting requests in progress finish for up to
/// `shutdown_timeout_s` seconds.
pub fn server(
    listener: std::net::TcpListener,
    broker: Broker,
    workers: usize,
    shutdown_timeout_s: u64,
) -> std::io::Result<actix_web::dev::Server> {
    let broker = web::Data::new(broker);
    let round_robin = web::Data::new(records::RoundRobin::default());
    let members = web::Data::new(members::Members::default());
    Ok(HttpServer::new(move || {
        App::new()
            .wrap_fn(|req, srv| {
                use actix_web::body::{BodySize, MessageBody};
                use actix_web::dev::Service;
                let started = std::time::Instant::now();
                // The route pattern, not the path: one series per route however many topics.
                let api = format!(
                    "{} {}",
                    req.method(),
                    req.match_pattern().as_deref().unwrap_or("unmatched")
                );
                let received = req
                    .headers()
                    .get(actix_web::http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                    .unwrap_or(0);
                let answer = srv.call(req);
                async move {
                    let res = answer.await?;
                    let failed = res.status().is_client_error() || res.status().is_server_error();
                    live::request(Frontend::Http, &api, started.elapsed(), failed);
                    live::bytes_received(Frontend::Http, received);
                    if let BodySize::Sized(n) = res.response().body().size() {
                        live::bytes_sent(Frontend::Http, n as usize);
                    }
                    Ok(res)
                }
            })
            .app_data(broker.clone())
            .app_data(round_robin.clone())
            .app_data(members.clone())
            .app_data(json_config())
            .app_data(web::PathConfig::default().error_handler(bad_input))
            .app_data(web::QueryConfig::default().error_handler(bad_input))
            .configure(register)
            .configure(|cfg| {
                #[cfg(debug_assertions)]
                faults::register(cfg);
                let _ = cfg;
            })
            .default_service(web::to(not_found))
    })
    .workers(workers.max(1))
    .disable_signals()
    .shutdown_timeout(shutdown_timeout_s)
    .listen(listener)?
    .run())
}
mod partitioner;
