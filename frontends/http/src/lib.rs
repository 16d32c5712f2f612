//! Spool's HTTP front end: `GET /healthz` (the process is up), `GET /readyz` (the store is
//! recovered and the listeners are bound: true once this serves) and `GET /metrics` (Prometheus
//! text). Errors are JSON bodies `{"error_code": ..., "message": ...}`.

mod metrics;
mod payload;
mod queues;
mod records;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;
use spool_actors::Broker;

/// A JSON error with the HTTP status as its code.
fn error(status: actix_web::http::StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "error_code": status.as_u16(),
        "message": message,
    }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "up"}))
}

async fn readyz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ready"}))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error(
        actix_web::http::StatusCode::NOT_FOUND,
        format!("no route for {} {}", req.method(), req.path()),
    )
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

/// The HTTP server on an already bound listener; it runs when awaited (or spawned) inside an
/// actix runtime.
pub fn server(
    listener: std::net::TcpListener,
    broker: Broker,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    let broker = web::Data::new(broker);
    let round_robin = web::Data::new(records::RoundRobin::default());
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(broker.clone())
            .app_data(round_robin.clone())
            .app_data(json_config())
            .app_data(web::PathConfig::default().error_handler(bad_input))
            .app_data(web::QueryConfig::default().error_handler(bad_input))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics::scrape))
            .route("/topics/{topic}/records", web::post().to(records::produce))
            .route(
                "/topics/{topic}/partitions/{partition}/records",
                web::get().to(records::read),
            )
            .route("/queues/{queue}", web::get().to(queues::stats))
            .route("/queues/{queue}/messages", web::post().to(queues::send))
            .route("/queues/{queue}/receive", web::post().to(queues::receive))
            .route("/queues/{queue}/ack", web::post().to(queues::ack))
            .route("/queues/{queue}/nack", web::post().to(queues::nack))
            .default_service(web::to(not_found))
    })
    .workers(workers.max(1))
    .listen(listener)?
    .run())
}
mod partitioner;
