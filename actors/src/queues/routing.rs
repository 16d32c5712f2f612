//! Exchanges and bindings, and how a publish is routed to queues, as AMQP 0-9-1 defines it
//! (with RabbitMQ's semantics for the topic and headers exchanges). Plain data and functions;
//! the [`super::registry::QueueRegistry`] owns the definitions and publishes [`RoutingTable`]
//! snapshots that front ends read without a round trip.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Queue and exchange arguments (AMQP field tables), as JSON values.
pub type Arguments = BTreeMap<String, Value>;

/// How an exchange routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKind {
    /// To queues bound with the publish's routing key.
    Direct,
    /// To every bound queue.
    Fanout,
    /// By pattern: words separated by `.`, `*` one word, `#` zero or more.
    Topic,
    /// By message headers: `x-match` all (default) or any, `all-with-x`/`any-with-x`.
    Headers,
}

impl ExchangeKind {
    /// The AMQP type name's kind.
    pub fn parse(kind: &str) -> Option<ExchangeKind> {
        Some(match kind {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// An exchange's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDef {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: Arguments,
}

/// A binding from an exchange to a queue.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Binding {
    pub exchange: String,
    pub queue: String,
    pub routing_key: String,
    /// Arguments as canonical JSON text, so bindings order and compare.
    pub arguments: String,
}

impl Binding {
    pub fn arguments(&self) -> Arguments {
        serde_json::from_str(&self.arguments).unwrap_or_default()
    }
}

/// A queue as routing sees it: its name and the topic that holds its records.
#[derive(Debug, Clone)]
pub struct QueueTarget {
    pub name: String,
    pub topic: String,
    /// `x-message-ttl`: records expire this long after they are published.
    pub message_ttl: Option<i64>,
    /// A queue that may refuse publishes (`x-overflow=reject-publish`): ask it first with
    /// [`crate::queues::queue::AdmitPublish`].
    pub admission: Option<actix::Addr<crate::queues::queue::QueueActor>>,
}

/// Why a publish cannot be routed at all (as opposed to routing to no queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    NoExchange(String),
    /// Internal exchanges take no publishes from clients.
    Internal(String),
}

/// Exchanges, bindings and queue targets at one moment.
#[derive(Debug, Default)]
pub struct RoutingTable {
    pub exchanges: BTreeMap<String, ExchangeDef>,
    pub bindings: BTreeSet<Binding>,
    pub queues: BTreeMap<String, QueueTarget>,
}

impl RoutingTable {
    /// The queues a publish to `exchange` with `routing_key` and `headers` reaches. The default
    /// exchange (`""`) reaches the queue named by the routing key.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: &Arguments,
    ) -> Result<Vec<QueueTarget>, RouteError> {
        if exchange.is_empty() {
            return Ok(self.queues.get(routing_key).cloned().into_iter().collect());
        }
        let ex = self
            .exchanges
            .get(exchange)
            .ok_or_else(|| RouteError::NoExchange(exchange.to_string()))?;
        if ex.internal {
            return Err(RouteError::Internal(exchange.to_string()));
        }
        let mut names = BTreeSet::new();
        for b in self.bindings_of(exchange) {
            let hit = match ex.kind {
                ExchangeKind::Direct => b.routing_key == routing_key,
                ExchangeKind::Fanout => true,
                ExchangeKind::Topic => topic_matches(&b.routing_key, routing_key),
                ExchangeKind::Headers => headers_match(&b.arguments(), headers),
            };
            if hit {
                names.insert(b.queue.as_str());
            }
        }
        Ok(names
            .into_iter()
            .filter_map(|n| self.queues.get(n).cloned())
            .collect())
    }

    /// Bindings whose source is `exchange`.
    pub fn bindings_of<'a>(&'a self, exchange: &'a str) -> impl Iterator<Item = &'a Binding> + 'a {
        self.bindings.iter().filter(move |b| b.exchange == exchange)
    }
}

/// Shared handle to the current routing table; the registry is its only writer.
#[derive(Clone, Default)]
pub struct Routes {
    inner: Arc<RwLock<Arc<RoutingTable>>>,
}

impl Routes {
    pub fn snapshot(&self) -> Arc<RoutingTable> {
        self.inner.read().expect("routes lock").clone()
    }

    pub(crate) fn publish(&self, table: RoutingTable) {
        *self.inner.write().expect("routes lock") = Arc::new(table);
    }
}

/// RabbitMQ's topic matching: `*` is exactly one word, `#` zero or more words.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((&w, rest)) => match k.split_first() {
                Some((kw, krest)) => (w == "*" || w == *kw) && go(rest, krest),
                None => false,
            },
        }
    }
    go(&p, &k)
}

/// RabbitMQ's headers matching: `x-match` is `all` (default), `any`, `all-with-x` or
/// `any-with-x`; binding arguments starting `x-` are ignored unless the mode ends `-with-x`. A
/// binding argument with no value (void) matches any value of the header.
pub fn headers_match(binding: &Arguments, headers: &Arguments) -> bool {
    let mode = binding
        .get("x-match")
        .and_then(Value::as_str)
        .unwrap_or("all");
    let with_x = mode.ends_with("-with-x");
    let mut wanted = binding
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.starts_with("x-")))
        .peekable();
    let matches = |(k, v): (&String, &Value)| headers.get(k).is_some_and(|h| v.is_null() || h == v);
    if mode.starts_with("any") {
        wanted.any(matches)
    } else {
        wanted.all(matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn topic_patterns_match_as_rabbitmq_does() {
        for (pattern, key, hit) in [
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.c", false),
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("#", "", true),
            ("#.c", "a.b.c", true),
            ("a.#.c", "a.c", true),
            ("*", "a.b", false),
            ("a.b", "a.b", true),
            ("*.orange.*", "quick.orange.rabbit", true),
            ("lazy.#", "lazy.orange.male.rabbit", true),
            ("*.*.rabbit", "quick.orange.fox", false),
        ] {
            assert_eq!(topic_matches(pattern, key), hit, "{pattern} ~ {key}");
        }
    }

    #[test]
    fn headers_match_all_and_any() {
        let h: Arguments = [
            ("format".into(), json!("pdf")),
            ("type".into(), json!("report")),
        ]
        .into_iter()
        .collect();
        let bind = |v: Value| -> Arguments { serde_json::from_value(v).unwrap() };
        assert!(headers_match(
            &bind(json!({"format": "pdf", "type": "report"})),
            &h
        ));
        assert!(!headers_match(
            &bind(json!({"format": "pdf", "type": "log"})),
            &h
        ));
        assert!(headers_match(
            &bind(json!({"x-match": "any", "format": "pdf", "type": "log"})),
            &h
        ));
        assert!(!headers_match(
            &bind(json!({"x-match": "any", "type": "log"})),
            &h
        ));
        assert!(headers_match(&bind(json!({"format": null})), &h));
    }

    #[test]
    fn the_default_exchange_routes_by_queue_name_and_unknown_exchanges_fail() {
        let mut t = RoutingTable::default();
        t.queues.insert(
            "q".into(),
            QueueTarget {
                name: "q".into(),
                topic: "q".into(),
                message_ttl: None,
                admission: None,
            },
        );
        assert_eq!(t.route("", "q", &Arguments::new()).unwrap().len(), 1);
        assert!(t.route("", "other", &Arguments::new()).unwrap().is_empty());
        assert!(matches!(
            t.route("nope", "q", &Arguments::new()),
            Err(RouteError::NoExchange(e)) if e == "nope"
        ));
    }
}
