//! AMQP messages and Spool records, both ways, and AMQP field tables as JSON arguments.
//!
//! A published message becomes one record of each queue's topic:
//! - key: the routing key; value: the body; timestamp: the `timestamp` property (seconds,
//!   stored as ms) or the publish time;
//! - each basic property as a text header `amqp.<property>` (`amqp.content-type`,
//!   `amqp.delivery-mode`, `amqp.correlation-id`, `amqp.reply-to`, ...), plus `amqp.exchange`;
//! - `priority` as `spool.priority`, `expiration` as `spool.expires-at-ms` (publish time plus
//!   the expiration), which the queue itself honours;
//! - the application headers as `amqp.headers` (the AMQP field table, encoded as on the wire,
//!   so AMQP consumers get them back exactly) and, for Kafka consumers, every header whose value
//!   is a string, number or boolean also as a plain text header of the same name.
//!
//! A record a Kafka client (or the HTTP front end) wrote has no `amqp.headers`: it is delivered
//! with its key as routing key, its value as body, its timestamp, and its own headers as an AMQP
//! field table of long strings.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use bytes::Bytes;
use serde_json::{Map, Number, Value};
use spool_actors::queues::record::{
    QueueRecord, DEATHS_HEADER, EXCHANGE_HEADER as EXCHANGE, EXPIRES_HEADER, PRIORITY_HEADER,
};
use spool_actors::queues::routing::Arguments;

const HEADERS: &str = "amqp.headers";

/// A field value as JSON (arguments, headers matching). Lossy only for decimals and bytes.
pub fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        AMQPValue::Float(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        AMQPValue::Double(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => Number::from_f64(d.value as f64 / 10f64.powi(d.scale as i32))
            .map_or(Value::Null, Value::Number),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(
            t.inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), value_to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        AMQPValue::Void => Value::Null,
    }
}

/// A field table as JSON arguments.
pub fn table_to_args(t: &FieldTable) -> Arguments {
    t.inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), value_to_json(v)))
        .collect()
}

/// JSON back to a field value (for headers Spool writes, such as `x-death`).
pub fn json_to_value(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        Value::Array(a) => {
            let mut arr = FieldArray::default();
            for x in a {
                arr.push(json_to_value(x));
            }
            AMQPValue::FieldArray(arr)
        }
        Value::Object(o) => {
            let mut t = FieldTable::default();
            for (k, x) in o {
                t.insert(ShortString::from(k.as_str()), json_to_value(x));
            }
            AMQPValue::FieldTable(t)
        }
    }
}

fn encode_table(t: &FieldTable) -> Option<Bytes> {
    gen_field_table(t)(WriteContext::from(Vec::new()))
        .ok()
        .map(|ctx| Bytes::from(ctx.write))
}

fn decode_table(b: &[u8]) -> Option<FieldTable> {
    parse_field_table(b).ok().map(|(_, t)| t)
}

fn text(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into(),
        AMQPValue::Boolean(_)
        | AMQPValue::ShortShortInt(_)
        | AMQPValue::ShortShortUInt(_)
        | AMQPValue::ShortInt(_)
        | AMQPValue::ShortUInt(_)
        | AMQPValue::LongInt(_)
        | AMQPValue::LongUInt(_)
        | AMQPValue::LongLongInt(_)
        | AMQPValue::Timestamp(_)
        | AMQPValue::Float(_)
        | AMQPValue::Double(_) => value_to_json(v).to_string(),
        _ => return None,
    })
}

/// The text properties and their header names.
macro_rules! text_properties {
    ($m:ident) => {
        $m!(content_type, with_content_type, "amqp.content-type");
        $m!(
            content_encoding,
            with_content_encoding,
            "amqp.content-encoding"
        );
        $m!(correlation_id, with_correlation_id, "amqp.correlation-id");
        $m!(reply_to, with_reply_to, "amqp.reply-to");
        $m!(expiration, with_expiration, "amqp.expiration");
        $m!(message_id, with_message_id, "amqp.message-id");
        $m!(kind, with_type, "amqp.type");
        $m!(user_id, with_user_id, "amqp.user-id");
        $m!(app_id, with_app_id, "amqp.app-id");
        $m!(cluster_id, with_cluster_id, "amqp.cluster-id");
    };
}

/// A message's own `expiration` in milliseconds, read as RabbitMQ reads it: a decimal
/// integer, nothing after it, not negative. The error is RabbitMQ's term for what is wrong
/// (`no_integer`, `{leftover_string,"x"}`, `{value_negative,-5}`), which it quotes in the
/// PRECONDITION_FAILED that refuses such a publish.
pub fn expiration_ms(props: &BasicProperties) -> Result<Option<i64>, String> {
    let Some(text) = props.expiration() else {
        return Ok(None);
    };
    let text = text.as_str();
    let digits = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(text.len(), |(i, _)| i);
    let n: i64 = match text[..digits].parse() {
        Ok(n) => n,
        Err(_) if digits > 1 => return Err(format!("{{value_too_large,{}}}", &text[..digits])),
        Err(_) => return Err("no_integer".to_string()),
    };
    if digits < text.len() {
        return Err(format!("{{leftover_string,{:?}}}", &text[digits..]));
    }
    if n < 0 {
        return Err(format!("{{value_negative,{n}}}"));
    }
    Ok(Some(n))
}

/// The record a publish stores. `ttl_ms`: the queue's `x-message-ttl`, if any (the shorter of
/// it and the message's own expiration applies).
pub fn to_record(
    exchange: &str,
    routing_key: &str,
    props: &BasicProperties,
    body: Bytes,
    now_ms: i64,
    ttl_ms: Option<i64>,
) -> QueueRecord {
    let mut headers: Vec<(String, Option<Bytes>)> = Vec::new();
    let mut put = |k: &str, v: String| headers.push((k.to_string(), Some(Bytes::from(v))));
    put(EXCHANGE, exchange.to_string());
    macro_rules! store {
        ($get:ident, $with:ident, $name:expr) => {
            if let Some(v) = props.$get() {
                put($name, v.as_str().to_string());
            }
        };
    }
    text_properties!(store);
    if let Some(m) = props.delivery_mode() {
        put("amqp.delivery-mode", m.to_string());
    }
    if let Some(p) = props.priority() {
        put(PRIORITY_HEADER, p.to_string());
    }
    if let Some(t) = props.timestamp() {
        put("amqp.timestamp", t.to_string());
    }
    let own_ttl = expiration_ms(props).ok().flatten();
    if let Some(ttl) = [own_ttl, ttl_ms].into_iter().flatten().min() {
        put(EXPIRES_HEADER, (now_ms + ttl.max(0)).to_string());
    }
    if let Some(t) = props.headers() {
        for (k, v) in t.inner() {
            if let Some(s) = text(v) {
                put(k.as_str(), s);
            }
        }
        headers.push((HEADERS.to_string(), encode_table(t)));
    }
    QueueRecord {
        key: Some(Bytes::copy_from_slice(routing_key.as_bytes())),
        value: Some(body),
        headers,
        timestamp_ms: props
            .timestamp()
            .map_or(now_ms, |t| (t as i64).saturating_mul(1000)),
    }
}

/// Adds RabbitMQ's `x-death` (newest first) and `x-first-death-*` headers from the record's
/// dead-letter history, with RabbitMQ's field types.
fn with_deaths(mut t: FieldTable, deaths: &[Value]) -> FieldTable {
    let text = |v: &Value| {
        AMQPValue::LongString(LongString::from(v.as_str().unwrap_or_default().as_bytes()))
    };
    let mut arr = FieldArray::default();
    for d in deaths {
        let mut e = FieldTable::default();
        e.insert(
            "count".into(),
            AMQPValue::LongLongInt(d["count"].as_i64().unwrap_or(1)),
        );
        e.insert("reason".into(), text(&d["reason"]));
        e.insert("queue".into(), text(&d["queue"]));
        e.insert("exchange".into(), text(&d["exchange"]));
        e.insert(
            "time".into(),
            AMQPValue::Timestamp(d["time"].as_u64().unwrap_or(0)),
        );
        let mut keys = FieldArray::default();
        for k in d["routing-keys"].as_array().into_iter().flatten() {
            keys.push(text(k));
        }
        e.insert("routing-keys".into(), AMQPValue::FieldArray(keys));
        arr.push(AMQPValue::FieldTable(e));
    }
    if let Some(first) = deaths.last() {
        t.insert("x-first-death-reason".into(), text(&first["reason"]));
        t.insert("x-first-death-queue".into(), text(&first["queue"]));
        t.insert("x-first-death-exchange".into(), text(&first["exchange"]));
    }
    t.insert("x-death".into(), AMQPValue::FieldArray(arr));
    t
}

/// What a delivery carries, rebuilt from a record.
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Bytes,
}

/// The AMQP view of a stored record (written by AMQP or by a Kafka client).
pub fn from_record(record: &QueueRecord) -> Outgoing {
    let header = |k: &str| {
        record
            .header(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let mut props = BasicProperties::default();
    macro_rules! load {
        ($get:ident, $with:ident, $name:expr) => {
            if let Some(v) = header($name) {
                props = props.$with(ShortString::from(v));
            }
        };
    }
    text_properties!(load);
    if let Some(m) = header("amqp.delivery-mode").and_then(|m| m.parse().ok()) {
        props = props.with_delivery_mode(m);
    }
    if let Some(p) = header(PRIORITY_HEADER).and_then(|p| p.parse().ok()) {
        props = props.with_priority(p);
    }
    if let Some(t) = header("amqp.timestamp").and_then(|t| t.parse().ok()) {
        props = props.with_timestamp(t);
    }
    let table = match record.header(HEADERS) {
        Some(b) => decode_table(b),
        // A record written by a Kafka client or over HTTP: its own headers (not the broker's
        // `amqp.*` and `spool.*` ones), as long strings.
        None => {
            let mut t = FieldTable::default();
            for (k, v) in &record.headers {
                if k.starts_with("amqp.") || k.starts_with("spool.") {
                    continue;
                }
                let bytes = v.as_ref().map(|b| b.to_vec()).unwrap_or_default();
                t.insert(
                    ShortString::from(k.as_str()),
                    AMQPValue::LongString(LongString::from(bytes)),
                );
            }
            (!t.inner().is_empty()).then_some(t)
        }
    };
    let deaths = record
        .header(DEATHS_HEADER)
        .and_then(|b| serde_json::from_slice::<Vec<Value>>(b).ok());
    let table = match (table, deaths) {
        (t, Some(deaths)) => Some(with_deaths(t.unwrap_or_default(), &deaths)),
        (t, None) => t,
    };
    if let Some(t) = table {
        props = props.with_headers(t);
    }
    Outgoing {
        exchange: header(EXCHANGE).unwrap_or_default(),
        routing_key: record
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        properties: props,
        body: record.value.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_messages_round_trip_through_records() {
        let mut headers = FieldTable::default();
        headers.insert("count".into(), AMQPValue::LongInt(3));
        headers.insert("who".into(), AMQPValue::LongString("me".into()));
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_correlation_id("c-1".into())
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_delivery_mode(2)
            .with_priority(4)
            .with_timestamp(1_700_000_000)
            .with_headers(headers);
        let record = to_record("ex", "rk", &props, Bytes::from_static(b"{}"), 5, None);
        assert_eq!(record.priority(), 4);
        assert_eq!(record.timestamp_ms, 1_700_000_000_000);
        // Kafka consumers see the simple headers as text.
        assert_eq!(record.header("who").map(|b| &b[..]), Some(&b"me"[..]));
        assert_eq!(record.header("count").map(|b| &b[..]), Some(&b"3"[..]));
        let back = from_record(&record);
        assert_eq!(
            (back.exchange.as_str(), back.routing_key.as_str()),
            ("ex", "rk")
        );
        assert_eq!(back.properties, props);
        assert_eq!(&back.body[..], b"{}");
    }

    #[test]
    fn expirations_are_read_as_rabbitmq_reads_them() {
        let read = |e: &str| expiration_ms(&BasicProperties::default().with_expiration(e.into()));
        assert_eq!(read("1500"), Ok(Some(1500)));
        assert_eq!(read("0"), Ok(Some(0)));
        assert_eq!(read("soon").unwrap_err(), "no_integer");
        assert_eq!(read("").unwrap_err(), "no_integer");
        assert_eq!(read("10s").unwrap_err(), r#"{leftover_string,"s"}"#);
        assert_eq!(read("-5").unwrap_err(), "{value_negative,-5}");
        assert_eq!(expiration_ms(&BasicProperties::default()), Ok(None));
    }

    #[test]
    fn expiration_and_queue_ttl_take_the_shorter() {
        let props = BasicProperties::default().with_expiration("500".into());
        let r = to_record("", "q", &props, Bytes::new(), 1000, Some(200));
        assert_eq!(r.expires_at_ms(), Some(1200));
        let r = to_record("", "q", &props, Bytes::new(), 1000, None);
        assert_eq!(r.expires_at_ms(), Some(1500));
    }

    #[test]
    fn kafka_records_arrive_with_their_headers_as_strings() {
        let record = QueueRecord {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![("trace".into(), Some(Bytes::from_static(b"abc")))],
            timestamp_ms: 1,
        };
        let out = from_record(&record);
        assert_eq!(out.routing_key, "k");
        let h = out.properties.headers().clone().unwrap();
        assert_eq!(
            h.inner().get("trace"),
            Some(&AMQPValue::LongString("abc".into()))
        );
    }
}
