//! Spool's HTTP front end: `GET /healthz` (the process is up), `GET /readyz` (the store is
//! recovered and the listeners are bound: true once this serves) and `GET /metrics` (Prometheus
//! text). Errors are JSON bodies `{"error_code": ..., "message": ...}`.

mod metrics;

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

/// The HTTP server on an already bound listener; it runs when awaited (or spawned) inside an
/// actix runtime.
pub fn server(
    listener: std::net::TcpListener,
    broker: Broker,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    let broker = web::Data::new(broker);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(broker.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics::scrape))
            .default_service(web::to(not_found))
    })
    .workers(workers.max(1))
    .listen(listener)?
    .run())
}
