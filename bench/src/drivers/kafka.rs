//! The `kafka` driver: librdkafka through rdkafka, against Spool's Kafka front end or any
//! Kafka-protocol broker. A subscription is a consumer group; streams only (Kafka has no
//! per-message acknowledgement).

use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::driver::{BoxFut, Consumer, Deliver, Driver, Producer, Reading, TaskConsumer};

/// Options of the kafka driver.
pub struct KafkaDriver {
    pub bootstrap: String,
    /// Create topics with `flush.messages=1`: the broker fsyncs before every acknowledgement.
    pub fsync_each: bool,
}

impl KafkaDriver {
    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }
}

impl Driver for KafkaDriver {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn durability(&self) -> String {
        if self.fsync_each {
            "acks=all, flush.messages=1 (fsync before every ack)".into()
        } else {
            "acks=all, the broker's default flush policy".into()
        }
    }

    fn prepare<'a>(
        &'a self,
        topic: &'a str,
        partitions: u32,
        _subscriptions: &'a [String],
        reading: Reading,
    ) -> BoxFut<'a, ()> {
        Box::pin(async move {
            if reading != Reading::Stream {
                bail!("the kafka driver reads streams only (Kafka has no per-message ack)");
            }
            let admin: AdminClient<DefaultClientContext> = self.config().create()?;
            let mut t = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(1));
            if self.fsync_each {
                t = t.set("flush.messages", "1");
            }
            let r = admin.create_topics(&[t], &AdminOptions::new()).await?;
            for r in r {
                r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
            }
            Ok(())
        })
    }

    fn producer<'a>(&'a self, topic: &'a str) -> BoxFut<'a, Box<dyn Producer>> {
        Box::pin(async move {
            let producer: FutureProducer = self
                .config()
                .set("acks", "all")
                .set("linger.ms", "1")
                .set("batch.size", "1048576")
                .set("queue.buffering.max.messages", "1000000")
                .create()
                .context("creating a kafka producer")?;
            Ok(Box::new(KafkaProducer {
                producer,
                topic: topic.to_string(),
            }) as Box<dyn Producer>)
        })
    }

    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        subscription: &'a str,
        _reading: Reading,
        deliver: Deliver,
    ) -> BoxFut<'a, Box<dyn Consumer>> {
        Box::pin(async move {
            let consumer: StreamConsumer = self
                .config()
                .set("group.id", subscription)
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "true")
                .set("fetch.wait.max.ms", "10")
                .create()
                .context("creating a kafka consumer")?;
            consumer.subscribe(&[topic])?;
            Ok(Box::new(TaskConsumer::spawn(move |mut stop| async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        m = consumer.recv() => {
                            let m = m?;
                            deliver(m.payload().unwrap_or_default());
                        }
                    }
                }
                consumer.unsubscribe();
                Ok(())
            })) as Box<dyn Consumer>)
        })
    }

    fn cleanup<'a>(&'a self, topic: &'a str, _subscriptions: &'a [String]) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let admin: AdminClient<DefaultClientContext> = self.config().create()?;
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            admin.delete_topics(&[topic], &opts).await?;
            Ok(())
        })
    }
}

struct KafkaProducer {
    producer: FutureProducer,
    topic: String,
}

impl Producer for KafkaProducer {
    fn send(&self, key: Option<Vec<u8>>, payload: Vec<u8>) -> BoxFut<'static, ()> {
        let mut record = FutureRecord::to(&self.topic).payload(&payload);
        if let Some(k) = &key {
            record = record.key(k);
        }
        // The record is copied into librdkafka's queue here; the future awaits its ack.
        let queued = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| anyhow::anyhow!("kafka enqueue: {e}"));
        Box::pin(async move {
            queued?
                .await
                .context("kafka producer dropped the record")?
                .map_err(|(e, _)| anyhow::anyhow!("kafka delivery: {e}"))?;
            Ok(())
        })
    }
}
