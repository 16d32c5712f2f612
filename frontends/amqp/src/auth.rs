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

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{FieldTable, LongString};

    fn config() -> AmqpConfig {
        AmqpConfig {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat_s: 60,
            max_message_bytes: 1 << 20,
            max_connections: 16,
            users: vec![
                ("guest".into(), "guest".into()),
                ("app".into(), "s3cret".into()),
            ],
            guest_loopback_only: true,
            max_inflight_bytes: 1 << 20,
            ..AmqpConfig::default()
        }
    }

    fn plain(user: &str, pass: &str) -> StartOk {
        StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from(format!("\0{user}\0{pass}")),
            locale: "en_US".into(),
        }
    }

    /// AMQPLAIN's response: a field table without its length prefix.
    fn amqplain(user: &str, pass: &str) -> StartOk {
        let mut t = FieldTable::default();
        t.insert("LOGIN".into(), AMQPValue::LongString(user.into()));
        t.insert("PASSWORD".into(), AMQPValue::LongString(pass.into()));
        let encoded = amq_protocol::types::generation::gen_field_table(&t)(
            amq_protocol::frame::WriteContext::from(Vec::new()),
        )
        .expect("encodes")
        .write;
        StartOk {
            client_properties: FieldTable::default(),
            mechanism: "AMQPLAIN".into(),
            response: LongString::from(encoded[4..].to_vec()),
            locale: "en_US".into(),
        }
    }

    #[test]
    fn guest_logs_in_from_loopback_only_and_others_from_anywhere() {
        let (local, remote) = (
            "127.0.0.1:5000".parse().unwrap(),
            "192.0.2.7:5000".parse().unwrap(),
        );
        let c = config();
        assert!(check(&c, &plain("guest", "guest"), local).is_ok());
        let e = check(&c, &plain("guest", "guest"), remote).unwrap_err();
        assert_eq!(e.code, reply::ACCESS_REFUSED);
        assert!(
            e.text.contains("can only connect via localhost"),
            "{}",
            e.text
        );
        assert!(check(&c, &plain("app", "s3cret"), remote).is_ok());
        assert!(check(&c, &amqplain("app", "s3cret"), remote).is_ok());
        let open = AmqpConfig {
            guest_loopback_only: false,
            ..config()
        };
        assert!(check(&open, &plain("guest", "guest"), remote).is_ok());
    }

    #[test]
    fn wrong_passwords_and_mechanisms_are_refused() {
        let local = "127.0.0.1:5000".parse().unwrap();
        let c = config();
        for start_ok in [
            plain("app", "guess"),
            amqplain("app", "guess"),
            plain("nobody", ""),
        ] {
            let e = check(&c, &start_ok, local).unwrap_err();
            assert_eq!((e.code, e.connection), (reply::ACCESS_REFUSED, true));
            assert!(e.text.contains("Login was refused"), "{}", e.text);
        }
        let mut external = plain("app", "s3cret");
        external.mechanism = "EXTERNAL".into();
        assert!(check(&c, &external, local)
            .unwrap_err()
            .text
            .contains("unsupported mechanism 'EXTERNAL'"));
        let mut garbled = plain("app", "s3cret");
        garbled.response = LongString::from(b"no separators".to_vec());
        assert!(check(&c, &garbled, local).is_err());
    }
}
