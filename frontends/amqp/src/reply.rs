//! AMQP reply codes, and the only mapping from broker errors to them. Texts follow RabbitMQ's
//! (`NOT_FOUND - no queue 'q' in vhost '/'`), which clients and their users recognise.

use spool_actors::BrokerError;

pub const REPLY_SUCCESS: u16 = 200;
pub const NO_ROUTE: u16 = 312;
pub const CONNECTION_FORCED: u16 = 320;
pub const ACCESS_REFUSED: u16 = 403;
pub const NOT_FOUND: u16 = 404;
pub const RESOURCE_LOCKED: u16 = 405;
pub const PRECONDITION_FAILED: u16 = 406;
pub const FRAME_ERROR: u16 = 501;
pub const SYNTAX_ERROR: u16 = 502;
pub const COMMAND_INVALID: u16 = 503;
pub const CHANNEL_ERROR: u16 = 504;
pub const UNEXPECTED_FRAME: u16 = 505;
pub const RESOURCE_ERROR: u16 = 506;
pub const NOT_ALLOWED: u16 = 530;
pub const NOT_IMPLEMENTED: u16 = 540;
pub const INTERNAL_ERROR: u16 = 541;

/// The name RabbitMQ puts before a reply text.
fn code_name(code: u16) -> &'static str {
    match code {
        NO_ROUTE => "NO_ROUTE",
        CONNECTION_FORCED => "CONNECTION_FORCED",
        ACCESS_REFUSED => "ACCESS_REFUSED",
        NOT_FOUND => "NOT_FOUND",
        RESOURCE_LOCKED => "RESOURCE_LOCKED",
        PRECONDITION_FAILED => "PRECONDITION_FAILED",
        FRAME_ERROR => "FRAME_ERROR",
        SYNTAX_ERROR => "SYNTAX_ERROR",
        COMMAND_INVALID => "COMMAND_INVALID",
        CHANNEL_ERROR => "CHANNEL_ERROR",
        UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
        RESOURCE_ERROR => "RESOURCE_ERROR",
        NOT_ALLOWED => "NOT_ALLOWED",
        NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
        INTERNAL_ERROR => "INTERNAL_ERROR",
        _ => "",
    }
}

/// An error that closes a channel or the whole connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct AmqpError {
    pub code: u16,
    pub text: String,
    /// Whether it closes the connection (hard error) or only the channel (soft error).
    pub connection: bool,
    /// The method that caused it (0, 0 when none).
    pub class_id: u16,
    pub method_id: u16,
}

impl AmqpError {
    fn new(code: u16, connection: bool, detail: impl std::fmt::Display) -> AmqpError {
        AmqpError {
            code,
            text: format!("{} - {detail}", code_name(code)),
            connection,
            class_id: 0,
            method_id: 0,
        }
    }

    /// A soft error: the channel closes.
    pub fn channel(code: u16, detail: impl std::fmt::Display) -> AmqpError {
        AmqpError::new(code, false, detail)
    }

    /// A hard error: the connection closes.
    pub fn connection(code: u16, detail: impl std::fmt::Display) -> AmqpError {
        AmqpError::new(code, true, detail)
    }

    /// Names the method that failed.
    pub fn on(mut self, class_id: u16, method_id: u16) -> AmqpError {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }
}

impl From<BrokerError> for AmqpError {
    fn from(e: BrokerError) -> AmqpError {
        match &e {
            BrokerError::NoSuchEntity { .. } => AmqpError::channel(NOT_FOUND, &e),
            BrokerError::PreconditionFailed(_) => AmqpError::channel(PRECONDITION_FAILED, &e),
            BrokerError::ResourceLocked(_) => AmqpError::channel(RESOURCE_LOCKED, &e),
            BrokerError::AccessRefused(_) => AmqpError::channel(ACCESS_REFUSED, &e),
            BrokerError::InvalidRequest(_) => AmqpError::connection(COMMAND_INVALID, &e),
            BrokerError::InvalidTopic { .. } | BrokerError::InvalidConfig(_) => {
                AmqpError::channel(PRECONDITION_FAILED, &e)
            }
            _ => AmqpError::connection(INTERNAL_ERROR, &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_get_rabbitmq_codes_and_texts() {
        let e = AmqpError::from(BrokerError::NoSuchEntity {
            kind: "queue",
            name: "q' in vhost '/".into(),
        });
        assert_eq!((e.code, e.connection), (NOT_FOUND, false));
        assert_eq!(e.text, "NOT_FOUND - no queue 'q' in vhost '/'");
        let e = AmqpError::from(BrokerError::InvalidRequest(
            "unknown exchange type 'x'".into(),
        ));
        assert_eq!((e.code, e.connection), (COMMAND_INVALID, true));
    }
}
