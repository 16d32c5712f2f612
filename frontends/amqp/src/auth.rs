//! SASL PLAIN and AMQPLAIN against the configured users. As RabbitMQ does, the default
//! `guest` user may only connect from loopback.

use std::net::SocketAddr;

use amq_protocol::protocol::connection::StartOk;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::AMQPValue;

use crate::reply::{self, AmqpError};
use crate::AmqpConfig;

/// The user name and password a client sent.
fn credentials(start_ok: &StartOk) -> Result<(String, String), AmqpError> {
    let bad = |why: &str| AmqpError::connection(reply::ACCESS_REFUSED, why.to_string());
    let response = start_ok.response.as_bytes();
    match start_ok.mechanism.as_str() {
        "PLAIN" => {
            // authzid \0 authcid \0 password
            let mut parts = response.split(|b| *b == 0);
            let (_, user, pass) = (parts.next(), parts.next(), parts.next());
            match (user, pass) {
                (Some(u), Some(p)) => Ok((
                    String::from_utf8_lossy(u).into_owned(),
                    String::from_utf8_lossy(p).into_owned(),
                )),
                _ => Err(bad("malformed PLAIN response")),
            }
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let mut table = (response.len() as u32).to_be_bytes().to_vec();
            table.extend_from_slice(response);
            let (_, t) =
                parse_field_table(&table[..]).map_err(|_| bad("malformed AMQPLAIN response"))?;
            let field = |k: &str| match t.inner().get(k) {
                Some(AMQPValue::LongString(s)) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_string()),
                _ => None,
            };
            match (field("LOGIN"), field("PASSWORD")) {
                (Some(u), Some(p)) => Ok((u, p)),
                _ => Err(bad("AMQPLAIN response lacks LOGIN or PASSWORD")),
            }
        }
        other => Err(bad(&format!("unsupported mechanism '{other}'"))),
    }
}

/// Accepts or refuses a login.
pub fn check(config: &AmqpConfig, start_ok: &StartOk, peer: SocketAddr) -> Result<(), AmqpError> {
    let (user, pass) = credentials(start_ok)?;
    let refused = || {
        AmqpError::connection(
            reply::ACCESS_REFUSED,
            format!(
                "Login was refused using authentication mechanism {}. For details see the broker logfile.",
                start_ok.mechanism.as_str()
            ),
        )
    };
    let known = config.users.iter().any(|(u, p)| *u == user && *p == pass);
    if !known {
        return Err(refused());
    }
    if user == "guest" && !peer.ip().is_loopback() && config.guest_loopback_only {
        return Err(AmqpError::connection(
            reply::ACCESS_REFUSED,
            "user 'guest' can only connect via localhost",
        ));
    }
    Ok(())
}
