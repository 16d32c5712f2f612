//! The `http` driver: Spool's HTTP front end through a plain HTTP/1.1 client (reqwest), as a
//! service without a Kafka or AMQP library would use it.
//! - Streams: records are produced with `POST /topics/{topic}/records`; each subscription is a
//!   consumer group whose members join over HTTP, long-poll their assigned partitions and
//!   commit what they read after every poll (at least once).
//! - Queues: messages are sent with `POST /queues/{queue}/messages`; consumers lease up to
//!   `prefetch` messages with `POST /queues/{queue}/receive` and acknowledge a lease's receipts
//!   in one `POST /queues/{queue}/ack` before they count them (exactly once).
//!
//! Payloads travel as base64 (they are binary). HTTP/1.1 has no pipelining, so a producer keeps
//! at most [`CONNECTIONS_PER_PRODUCER`] requests (connections) in flight; a send waiting for one
//! counts in its publish latency.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::driver::{BoxFut, Consumer, Deliver, Driver, Producer, Reading, TaskConsumer};

/// Requests a producer keeps in flight (each on its own keep-alive connection).
const CONNECTIONS_PER_PRODUCER: usize = 32;
/// How long a consumer's poll or receive waits for messages.
const LONG_POLL_MS: u64 = 500;

/// Options of the http driver.
pub struct HttpDriver {
    /// The HTTP front end's base URL, e.g. `http://127.0.0.1:8080`.
    pub base: String,
    client: reqwest::Client,
}

impl HttpDriver {
    pub fn new(base: String) -> HttpDriver {
        HttpDriver {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
        }
    }

    /// Whether `topic` was prepared as a queue (it decides the endpoints).
    async fn is_queue(&self, topic: &str) -> anyhow::Result<bool> {
        let resp = self
            .client
            .get(format!("{}/queues/{topic}", self.base))
            .send()
            .await?;
        Ok(resp.status().is_success())
    }
}

/// The body of a 2xx answer as JSON, or the error the broker answered with.
async fn json_of(resp: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("{what}: reading the answer"))?;
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).with_context(|| format!("{what}: the answer is not JSON"))
}

/// A record or message as the HTTP API returns it: JSON values come back as `value`/`body`,
/// anything else as base64.
#[derive(Deserialize)]
struct Payload {
    #[serde(alias = "body")]
    value: Option<Value>,
    #[serde(alias = "body_base64")]
    value_base64: Option<String>,
}

impl Payload {
    fn bytes(&self) -> anyhow::Result<Vec<u8>> {
        match (&self.value_base64, &self.value) {
            (Some(b), _) => Ok(BASE64.decode(b)?),
            (None, Some(v)) => Ok(serde_json::to_vec(v)?),
            (None, None) => bail!("a record without a value"),
        }
    }
}

#[derive(Deserialize)]
struct Polled {
    records: Vec<Payload>,
}

#[derive(Deserialize)]
struct Leased {
    messages: Vec<LeasedMessage>,
}

#[derive(Deserialize)]
struct LeasedMessage {
    receipt: String,
    #[serde(flatten)]
    payload: Payload,
}

impl Driver for HttpDriver {
    fn name(&self) -> &'static str {
        "http"
    }

    fn durability(&self) -> String {
        "HTTP 200 after the append (the broker's default flush policy); streams commit after \
         every poll, queue receipts acknowledged per lease"
            .into()
    }

    fn prepare<'a>(
        &'a self,
        topic: &'a str,
        partitions: u32,
        subscriptions: &'a [String],
        reading: Reading,
    ) -> BoxFut<'a, ()> {
        Box::pin(async move {
            match reading {
                Reading::Stream => {
                    let resp = self
                        .client
                        .post(format!("{}/topics", self.base))
                        .json(&json!({"name": topic, "partitions": partitions}))
                        .send()
                        .await?;
                    json_of(resp, "creating the topic").await?;
                }
                Reading::Queue { .. } => {
                    if subscriptions.len() != 1 {
                        bail!("the http driver has no exchanges: a queue workload has one subscription");
                    }
                    let resp = self
                        .client
                        .put(format!("{}/queues/{topic}", self.base))
                        .send()
                        .await?;
                    json_of(resp, "declaring the queue").await?;
                }
                Reading::Rpc => bail!("the http driver has no request/reply"),
            }
            Ok(())
        })
    }

    fn producer<'a>(&'a self, topic: &'a str) -> BoxFut<'a, Box<dyn Producer>> {
        Box::pin(async move {
            let queue = self.is_queue(topic).await?;
            let url = if queue {
                format!("{}/queues/{topic}/messages", self.base)
            } else {
                format!("{}/topics/{topic}/records", self.base)
            };
            Ok(Box::new(HttpProducer {
                client: self.client.clone(),
                queue,
                url: Arc::from(url),
                slots: Arc::new(Semaphore::new(CONNECTIONS_PER_PRODUCER)),
            }) as Box<dyn Producer>)
        })
    }

    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        subscription: &'a str,
        reading: Reading,
        deliver: Deliver,
    ) -> BoxFut<'a, Box<dyn Consumer>> {
        Box::pin(async move {
            let client = self.client.clone();
            match reading {
                Reading::Queue { prefetch } => {
                    let receive = format!(
                        "{}/queues/{topic}/receive?max={prefetch}&wait_ms={LONG_POLL_MS}&visibility_ms=30000",
                        self.base
                    );
                    let ack = format!("{}/queues/{topic}/ack", self.base);
                    Ok(Box::new(TaskConsumer::spawn(move |mut stop| async move {
                        loop {
                            let resp = tokio::select! {
                                _ = stop.changed() => break,
                                r = client.post(&receive).send() => r?,
                            };
                            let leased: Leased =
                                serde_json::from_value(json_of(resp, "receive").await?)?;
                            if leased.messages.is_empty() {
                                continue;
                            }
                            let receipts: Vec<&str> =
                                leased.messages.iter().map(|m| m.receipt.as_str()).collect();
                            let resp = client
                                .post(&ack)
                                .json(&json!({"receipts": receipts}))
                                .send()
                                .await?;
                            json_of(resp, "ack").await?;
                            for m in &leased.messages {
                                deliver(&m.payload.bytes()?);
                            }
                        }
                        Ok(())
                    })) as Box<dyn Consumer>)
                }
                Reading::Stream => {
                    let members = format!("{}/groups/{subscription}/members", self.base);
                    let resp = client
                        .post(&members)
                        .json(&json!({"topics": [topic], "auto_offset_reset": "earliest"}))
                        .send()
                        .await?;
                    let joined = json_of(resp, "joining the group").await?;
                    let member = joined["member_id"]
                        .as_str()
                        .ok_or_else(|| anyhow!("no member_id in {joined}"))?
                        .to_string();
                    let me = format!("{members}/{member}");
                    let poll = format!("{me}/records?timeout_ms={LONG_POLL_MS}");
                    let commit = format!("{me}/offsets");
                    Ok(Box::new(TaskConsumer::spawn(move |mut stop| async move {
                        loop {
                            let resp = tokio::select! {
                                _ = stop.changed() => break,
                                r = client.get(&poll).send() => r?,
                            };
                            let polled: Polled =
                                serde_json::from_value(json_of(resp, "poll").await?)?;
                            if polled.records.is_empty() {
                                continue;
                            }
                            for r in &polled.records {
                                deliver(&r.bytes()?);
                            }
                            json_of(client.post(&commit).send().await?, "commit").await?;
                        }
                        let _ = client.delete(&me).send().await;
                        Ok(())
                    })) as Box<dyn Consumer>)
                }
                Reading::Rpc => bail!("the http driver has no request/reply"),
            }
        })
    }

    fn cleanup<'a>(&'a self, topic: &'a str, _subscriptions: &'a [String]) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let url = if self.is_queue(topic).await? {
                format!("{}/queues/{topic}", self.base)
            } else {
                format!("{}/topics/{topic}", self.base)
            };
            json_of(self.client.delete(url).send().await?, "deleting").await?;
            Ok(())
        })
    }
}

struct HttpProducer {
    client: reqwest::Client,
    url: Arc<str>,
    /// Sends to a queue (`body_base64`) rather than a topic (`value_base64`, `key`).
    queue: bool,
    slots: Arc<Semaphore>,
}

impl Producer for HttpProducer {
    fn send(&self, key: Option<Vec<u8>>, payload: Vec<u8>) -> BoxFut<'static, ()> {
        let (client, url, slots) = (self.client.clone(), self.url.clone(), self.slots.clone());
        let body = if self.queue {
            json!({"messages": [{"body_base64": BASE64.encode(&payload)}]})
        } else {
            // Keys are text in the HTTP API: binary keys go as hex.
            let key = key.map(|k| {
                String::from_utf8(k)
                    .unwrap_or_else(|e| e.as_bytes().iter().map(|b| format!("{b:02x}")).collect())
            });
            json!({"records": [{"key": key, "value_base64": BASE64.encode(&payload)}]})
        };
        Box::pin(async move {
            let _slot = slots.acquire().await?;
            let resp = tokio::time::timeout(
                Duration::from_secs(30),
                client.post(&*url).json(&body).send(),
            )
            .await
            .context("no answer within 30 s")??;
            json_of(resp, "produce").await?;
            Ok(())
        })
    }
}
