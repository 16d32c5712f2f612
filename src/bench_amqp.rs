//! `spool bench --amqp URI`: the task-queue workload over AMQP 0-9-1 with lapin, against Spool
//! or any AMQP broker (RabbitMQ), so both are measured with the same client in the same run.
//!
//! One publisher with publisher confirms (a window of outstanding confirms), persistent
//! messages, and competing consumers with a prefetch and an ack per message. Each body starts
//! with its publish time, so publish-to-deliver latency is measured at the consumer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// The workload's settings.
pub struct AmqpWorkload {
    pub uri: String,
    pub messages: u64,
    pub size: usize,
    pub confirm_window: usize,
    pub consumers: usize,
    /// Publishing connections; the messages are split among them.
    pub publishers: usize,
    pub prefetch: u16,
    /// `x-queue-type` to declare (`classic`, `quorum`); none when empty.
    pub queue_type: String,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Publishes `count` persistent messages with at most `window` confirms outstanding; returns
/// how many were nacked.
async fn publish(
    ch: &lapin::Channel,
    queue: &str,
    count: u64,
    size: usize,
    window: usize,
) -> anyhow::Result<u64> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    type Acked = std::pin::Pin<Box<dyn std::future::Future<Output = lapin::Result<bool>> + Send>>;
    let mut pending: VecDeque<Acked> = VecDeque::with_capacity(window);
    let mut body = vec![b'x'; size.max(8)];
    let mut nacked = 0u64;
    for _ in 0..count {
        if pending.len() >= window {
            let acked = pending.pop_front().expect("window is full");
            nacked += u64::from(!acked.await?);
        }
        body[..8].copy_from_slice(&now_us().to_be_bytes());
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        pending.push_back(Box::pin(async move { confirm.await.map(|c| c.is_ack()) }));
    }
    for acked in pending {
        nacked += u64::from(!acked.await?);
    }
    Ok(nacked)
}

/// Runs the workload and prints rates and latency percentiles.
pub fn run(w: AmqpWorkload) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(workload(w))
}

async fn workload(w: AmqpWorkload) -> anyhow::Result<()> {
    let queue = format!("spool-bench-{}", now_us());
    let mut args = FieldTable::default();
    if !w.queue_type.is_empty() {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(w.queue_type.as_str().into()),
        );
    }
    let conn = Connection::connect(&w.uri, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to {}", w.uri))?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
        .await?;
    println!(
        "queue {queue} ({}): {} messages of {} B, persistent, {} publishers with confirms window {}, {} consumers with prefetch {} and an ack each",
        if w.queue_type.is_empty() { "default type" } else { &w.queue_type },
        w.messages, w.size, w.publishers, w.confirm_window, w.consumers, w.prefetch
    );
    let received = Arc::new(AtomicU64::new(0));
    let all_in = Arc::new(tokio::sync::Notify::new());
    let latencies = Arc::new(std::sync::Mutex::new(hdrhistogram::Histogram::<u64>::new(
        3,
    )?));
    let mut consumers = Vec::new();
    for n in 0..w.consumers {
        let conn = Connection::connect(&w.uri, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        ch.basic_qos(w.prefetch, BasicQosOptions::default()).await?;
        let mut c = ch
            .basic_consume(
                queue.as_str().into(),
                format!("bench-{n}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let (received, latencies, total) = (received.clone(), latencies.clone(), w.messages);
        let all_in = all_in.clone();
        consumers.push(tokio::spawn(async move {
            let _keep = conn;
            loop {
                let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(60), c.next()).await
                else {
                    break;
                };
                if d.data.len() >= 8 {
                    let sent = u64::from_be_bytes(d.data[..8].try_into().unwrap());
                    let _ = latencies
                        .lock()
                        .unwrap()
                        .record(now_us().saturating_sub(sent));
                }
                if d.ack(BasicAckOptions::default()).await.is_err() {
                    break;
                }
                if received.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    all_in.notify_one();
                }
            }
            all_in.notify_one();
        }));
    }
    let start = Instant::now();
    let mut publishers = Vec::new();
    for n in 0..w.publishers {
        let share = w.messages / w.publishers as u64
            + u64::from((n as u64) < w.messages % w.publishers as u64);
        let conn = Connection::connect(&w.uri, ConnectionProperties::default()).await?;
        let (queue, size, window) = (queue.clone(), w.size, w.confirm_window);
        publishers.push(tokio::spawn(async move {
            let ch = conn.create_channel().await?;
            publish(&ch, &queue, share, size, window).await
        }));
    }
    let mut nacked = 0u64;
    for p in publishers {
        nacked += p.await??;
    }
    let published_in = start.elapsed();
    // Every message acked (or a consumer gave up after 60 s without a delivery).
    all_in.notified().await;
    let consumed_in = start.elapsed();
    for c in consumers {
        c.abort();
    }
    let got = received.load(Ordering::Relaxed);
    let mib = (w.messages * w.size as u64) as f64 / (1024.0 * 1024.0);
    println!(
        "publish: {:.0} msg/s ({:.1} MiB/s) confirmed in {:.2} s, {nacked} nacked",
        w.messages as f64 / published_in.as_secs_f64(),
        mib / published_in.as_secs_f64(),
        published_in.as_secs_f64()
    );
    println!(
        "consume: {got} of {} acked, {:.0} msg/s over {:.2} s from the first publish",
        w.messages,
        got as f64 / consumed_in.as_secs_f64(),
        consumed_in.as_secs_f64()
    );
    let h = latencies.lock().unwrap().clone();
    println!(
        "publish-to-deliver latency: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    if got < w.messages {
        anyhow::bail!("only {got} of {} messages were consumed", w.messages);
    }
    Ok(())
}
