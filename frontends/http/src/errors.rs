//! The one place HTTP statuses are chosen for broker errors, so every route answers the same
//! failure with the same status and a JSON body `{"error_code": ..., "message": ...}`.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::json;
use spool_actors::BrokerError;

/// A JSON error with the HTTP status as its code.
pub fn error(status: StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "error_code": status.as_u16(),
        "message": message,
    }))
}

/// 400 with a message.
pub fn bad_request(message: impl Into<String>) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, message.into())
}

/// 503: an actor the request needs is restarting or gone.
pub fn unavailable(what: impl std::fmt::Display) -> HttpResponse {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{what} is unavailable"),
    )
}

/// The status a broker error is answered with.
pub fn status_of(e: &BrokerError) -> StatusCode {
    use BrokerError::*;
    match e {
        UnknownTopic(_)
        | UnknownPartition { .. }
        | GroupNotFound(_)
        | UnknownMemberId(_)
        | NoSuchEntity { .. } => StatusCode::NOT_FOUND,
        TopicExists(_)
        | NonEmptyGroup(_)
        | RebalanceInProgress(_)
        | GroupSubscribedToTopic { .. }
        | IllegalGeneration { .. }
        | FencedMemberEpoch { .. }
        | StaleMemberEpoch { .. }
        | GroupTypeMismatch { .. }
        | InconsistentGroupProtocol(_)
        | PreconditionFailed(_) => StatusCode::CONFLICT,
        InvalidTopic { .. }
        | InvalidPartitions(_)
        | InvalidReplicationFactor(_)
        | InvalidConfig(_)
        | CorruptBatch(_)
        | InvalidRequest(_)
        | InvalidGroupId(_)
        | InvalidRegularExpression { .. }
        | UnsupportedAssignor(_) => StatusCode::BAD_REQUEST,
        BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        OffsetOutOfRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        ResourceLocked(_) | AccessRefused(_) => StatusCode::FORBIDDEN,
        PartitionUnavailable { .. } | GroupUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A broker error as a JSON response.
pub fn broker_error(e: BrokerError) -> HttpResponse {
    error(status_of(&e), e.to_string())
}

/// An actor's answer: its value, or the response for its error (503 when `actor` is gone).
// The error is the response itself, built at most once per request: its size does not matter.
#[allow(clippy::result_large_err)]
pub(crate) fn answered<T>(
    sent: Result<Result<T, BrokerError>, actix::MailboxError>,
    actor: &str,
) -> Result<T, HttpResponse> {
    match sent {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(broker_error(e)),
        Err(_) => Err(unavailable(actor)),
    }
}
