//! `POST /debug/faults` (debug builds only): crashes one actor, for tests of supervision.
//! Body: `{"actor": "partition", "topic": "t", "partition": 0}`, `{"actor": "group", "group":
//! "g"}`, `{"actor": "queue", "queue": "q"}`, `{"actor": "queue-state-journal"}` or
//! `{"actor": "offsets-journal"}`, each with an optional `"stall_ms"` the actor blocks its
//! thread for before it panics. Answers 204 once the actor has panicked. Not part of the
//! route table or the OpenAPI document: a release build does not serve it.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use spool_actors::faults::{crash, Fault, FaultTarget};
use spool_actors::Broker;

use crate::errors::{bad_request, broker_error};

#[derive(Deserialize)]
struct Body {
    actor: String,
    topic: Option<String>,
    partition: Option<i32>,
    group: Option<String>,
    queue: Option<String>,
    /// How long the actor blocks its thread before it panics (default 0).
    #[serde(default)]
    stall_ms: u64,
}

/// The crash a body asks for, when it names an actor completely.
fn fault(body: &Body) -> Option<Fault> {
    let target = match body.actor.as_str() {
        "partition" => FaultTarget::Partition {
            topic: body.topic.clone()?,
            partition: body.partition?,
        },
        "group" => FaultTarget::Group {
            group: body.group.clone()?,
        },
        "queue" => FaultTarget::Queue {
            queue: body.queue.clone()?,
        },
        "queue-state-journal" => FaultTarget::QueueStateJournal,
        "offsets-journal" => FaultTarget::OffsetsJournal,
        _ => return None,
    };
    Some(Fault {
        target,
        stall: std::time::Duration::from_millis(body.stall_ms.min(10_000)),
    })
}

async fn inject(broker: web::Data<Broker>, body: web::Json<Body>) -> HttpResponse {
    let Some(fault) = fault(&body) else {
        return bad_request(
            "expected {\"actor\": \"partition\", \"topic\", \"partition\"}, {\"actor\": \"group\", \"group\"}, {\"actor\": \"queue\", \"queue\"}, {\"actor\": \"queue-state-journal\"} or {\"actor\": \"offsets-journal\"}",
        );
    };
    match crash(&broker, &fault).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => broker_error(e),
    }
}

/// Adds the route (called only in debug builds).
pub fn register(cfg: &mut web::ServiceConfig) {
    cfg.route("/debug/faults", web::post().to(inject));
}
