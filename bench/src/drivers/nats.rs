//! The `nats` driver: async-nats against NATS JetStream with file storage. A topic is a stream
//! (JetStream streams are not partitioned: `partitions_per_topic` is ignored); a subscription
//! is a durable pull consumer, its consumers fetch from it competitively, and every message is
//! acknowledged explicitly. Queue workloads use a work-queue stream (a message is removed once
//! acknowledged). Publishes wait for JetStream's ack (stored in the stream's file store).
//! Request/reply uses core NATS requests, answered by a queue group of servers.

use std::time::Duration;

use anyhow::{anyhow, Context};
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, stream};
use futures_util::StreamExt;

use crate::driver::{
    BoxFut, Consumer, Deliver, Driver, Producer, Reading, RpcClient, TaskConsumer,
};

/// Options of the nats driver.
pub struct NatsDriver {
    pub url: String,
}

impl NatsDriver {
    async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::connect(&self.url)
            .await
            .with_context(|| format!("connecting to {}", self.url))
    }
}

impl Driver for NatsDriver {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn durability(&self) -> String {
        "JetStream publish acks, file storage, 1 replica, explicit ack per delivery \
         (fsync per the server's sync_interval)"
            .into()
    }

    fn prepare<'a>(
        &'a self,
        topic: &'a str,
        _partitions: u32,
        _subscriptions: &'a [String],
        reading: Reading,
    ) -> BoxFut<'a, ()> {
        Box::pin(async move {
            if reading == Reading::Rpc {
                // Core NATS request/reply: a stream on the subject would answer requests itself.
                return Ok(());
            }
            let js = jetstream::new(self.connect().await?);
            js.create_stream(stream::Config {
                name: topic.to_string(),
                subjects: vec![topic.to_string()],
                storage: stream::StorageType::File,
                retention: match reading {
                    Reading::Stream => stream::RetentionPolicy::Limits,
                    Reading::Queue { .. } | Reading::Rpc => stream::RetentionPolicy::WorkQueue,
                },
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("creating stream {topic}: {e}"))?;
            Ok(())
        })
    }

    fn producer<'a>(&'a self, topic: &'a str) -> BoxFut<'a, Box<dyn Producer>> {
        Box::pin(async move {
            let js = jetstream::new(self.connect().await?);
            Ok(Box::new(NatsProducer {
                js,
                subject: topic.to_string(),
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
            let js = jetstream::new(self.connect().await?);
            let stream = js
                .get_stream(topic)
                .await
                .map_err(|e| anyhow!("stream {topic}: {e}"))?;
            let max_ack_pending = match reading {
                Reading::Queue { prefetch } => i64::from(prefetch),
                Reading::Stream | Reading::Rpc => 10_000,
            };
            let consumer = stream
                .get_or_create_consumer(
                    subscription,
                    pull::Config {
                        durable_name: Some(subscription.to_string()),
                        ack_policy: AckPolicy::Explicit,
                        max_ack_pending,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| anyhow!("consumer {subscription}: {e}"))?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| anyhow!("pulling from {subscription}: {e}"))?;
            Ok(Box::new(TaskConsumer::spawn(move |mut stop| async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        m = messages.next() => {
                            let Some(m) = m else { break };
                            let m = m.map_err(|e| anyhow!("pull: {e}"))?;
                            m.ack().await.map_err(|e| anyhow!("ack: {e}"))?;
                            deliver(&m.payload);
                        }
                    }
                }
                Ok(())
            })) as Box<dyn Consumer>)
        })
    }

    fn cleanup<'a>(&'a self, topic: &'a str, _subscriptions: &'a [String]) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let js = jetstream::new(self.connect().await?);
            match js.delete_stream(topic).await {
                Ok(_) => Ok(()),
                // An rpc workload made no stream.
                Err(e) if e.to_string().contains("not found") => Ok(()),
                Err(e) => Err(anyhow!("deleting stream {topic}: {e}")),
            }
        })
    }

    fn rpc_client<'a>(&'a self, topic: &'a str) -> BoxFut<'a, Box<dyn RpcClient>> {
        Box::pin(async move {
            Ok(Box::new(NatsRpcClient {
                client: self.connect().await?,
                subject: topic.to_string(),
            }) as Box<dyn RpcClient>)
        })
    }

    fn rpc_server<'a>(&'a self, topic: &'a str, deliver: Deliver) -> BoxFut<'a, Box<dyn Consumer>> {
        Box::pin(async move {
            let client = self.connect().await?;
            let mut requests = client
                .queue_subscribe(topic.to_string(), "servers".to_string())
                .await
                .map_err(|e| anyhow!("subscribing to {topic}: {e}"))?;
            // The subscription is live once the server has seen it.
            client.flush().await.map_err(|e| anyhow!("flush: {e}"))?;
            Ok(Box::new(TaskConsumer::spawn(move |mut stop| async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        m = requests.next() => {
                            let Some(m) = m else { break };
                            deliver(&m.payload);
                            if let Some(reply) = m.reply {
                                client
                                    .publish(reply, m.payload)
                                    .await
                                    .map_err(|e| anyhow!("reply: {e}"))?;
                            }
                        }
                    }
                }
                Ok(())
            })) as Box<dyn Consumer>)
        })
    }
}

struct NatsProducer {
    js: jetstream::Context,
    subject: String,
}

impl Producer for NatsProducer {
    fn send(&self, _key: Option<Vec<u8>>, payload: Vec<u8>) -> BoxFut<'static, ()> {
        let (js, subject) = (self.js.clone(), self.subject.clone());
        Box::pin(async move {
            let ack = js
                .publish(subject, payload.into())
                .await
                .map_err(|e| anyhow!("publish: {e}"))?;
            tokio::time::timeout(Duration::from_secs(30), ack)
                .await
                .context("no JetStream ack within 30 s")?
                .map_err(|e| anyhow!("JetStream ack: {e}"))?;
            Ok(())
        })
    }
}

struct NatsRpcClient {
    client: async_nats::Client,
    subject: String,
}

impl RpcClient for NatsRpcClient {
    fn call(&self, payload: Vec<u8>) -> BoxFut<'static, Vec<u8>> {
        let (client, subject) = (self.client.clone(), self.subject.clone());
        Box::pin(async move {
            let reply = client
                .request(subject, payload.into())
                .await
                .map_err(|e| anyhow!("request: {e}"))?;
            Ok(reply.payload.to_vec())
        })
    }
}
