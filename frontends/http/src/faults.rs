//! `POST /debug/faults` (debug builds only): crashes one actor, for tests of supervision.
//! Body: `{"actor": "partition", "topic": "t", "partition": 0}` or
//! `{"actor": "group", "group": "g"}`. Answers 204 once the actor has panicked. Not part of
//! the route table or the OpenAPI document: a release build does not serve it.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use spool_actors::faults::{crash, FaultTarget};
use spool_actors::Broker;

use crate::errors::{bad_request, broker_error};

#[derive(Deserialize)]
struct Fault {
    actor: String,
    topic: Option<String>,
    partition: Option<i32>,
    group: Option<String>,
}

async fn inject(broker: web::Data<Broker>, body: web::Json<Fault>) -> HttpResponse {
    let target = match (body.actor.as_str(), &body.topic, body.partition, &body.group) {
        ("partition", Some(topic), Some(partition), _) => FaultTarget::Partition {
            topic: topic.clone(),
            partition,
        },
        ("group", _, _, Some(group)) => FaultTarget::Group {
            group: group.clone(),
        },
        _ => {
            return bad_request(
                "expected {\"actor\": \"partition\", \"topic\", \"partition\"} or {\"actor\": \"group\", \"group\"}",
            )
        }
    };
    match crash(&broker, &target).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => broker_error(e),
    }
}

/// Adds the route (called only in debug builds).
pub fn register(cfg: &mut web::ServiceConfig) {
    cfg.route("/debug/faults", web::post().to(inject));
}
