//! AMQP 0-9-1 method names (`basic.publish`, ...) by class and method id, as metrics label
//! them: a closed set, so the label cannot grow with traffic.

use amq_protocol::protocol::AMQPClass;

/// The spec's name of a method, or `other` for ids outside the spec.
pub fn method_name(m: &AMQPClass) -> &'static str {
    match (m.get_amqp_class_id(), m.get_amqp_method_id()) {
        (10, 10) => "connection.start",
        (10, 11) => "connection.start-ok",
        (10, 20) => "connection.secure",
        (10, 21) => "connection.secure-ok",
        (10, 30) => "connection.tune",
        (10, 31) => "connection.tune-ok",
        (10, 40) => "connection.open",
        (10, 41) => "connection.open-ok",
        (10, 50) => "connection.close",
        (10, 51) => "connection.close-ok",
        (10, 60) => "connection.blocked",
        (10, 61) => "connection.unblocked",
        (20, 10) => "channel.open",
        (20, 11) => "channel.open-ok",
        (20, 20) => "channel.flow",
        (20, 21) => "channel.flow-ok",
        (20, 40) => "channel.close",
        (20, 41) => "channel.close-ok",
        (40, 10) => "exchange.declare",
        (40, 20) => "exchange.delete",
        (40, 30) => "exchange.bind",
        (40, 40) => "exchange.unbind",
        (50, 10) => "queue.declare",
        (50, 20) => "queue.bind",
        (50, 30) => "queue.purge",
        (50, 40) => "queue.delete",
        (50, 50) => "queue.unbind",
        (60, 10) => "basic.qos",
        (60, 20) => "basic.consume",
        (60, 30) => "basic.cancel",
        (60, 31) => "basic.cancel-ok",
        (60, 40) => "basic.publish",
        (60, 70) => "basic.get",
        (60, 80) => "basic.ack",
        (60, 90) => "basic.reject",
        (60, 100) => "basic.recover-async",
        (60, 110) => "basic.recover",
        (60, 120) => "basic.nack",
        (85, 10) => "confirm.select",
        (90, 10) => "tx.select",
        (90, 20) => "tx.commit",
        (90, 30) => "tx.rollback",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::protocol::{basic, confirm};

    use super::*;

    #[test]
    fn names_follow_the_spec() {
        let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish::default()));
        assert_eq!(method_name(&publish), "basic.publish");
        let ack = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack::default()));
        assert_eq!(method_name(&ack), "basic.ack");
        let select = AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select::default()));
        assert_eq!(method_name(&select), "confirm.select");
    }
}
