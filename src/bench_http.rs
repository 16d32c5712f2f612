//! `spool bench --http URL`: HTTP produce throughput (batches of records, each request
//! answered with their offsets), and `--scrape-partitions`: how long `/metrics` takes with many
//! partitions and groups, alone and while produce runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// An HTTP produce or scrape run.
pub struct HttpWorkload {
    pub url: String,
    pub topic: String,
    pub partitions: i32,
    pub record_size: usize,
    pub batch: usize,
    pub messages: u64,
    pub publishers: usize,
    pub fsync_each: bool,
    /// Partitions (in topics of 10) and groups to create before timing scrapes; 0: no scrape
    /// run.
    pub scrape_partitions: usize,
    pub scrape_groups: usize,
    pub scrapes: usize,
    /// Pause between scrapes during produce (Prometheus scrapes every 5 to 60 s); 0: back to
    /// back.
    pub scrape_interval_ms: u64,
}

fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish()
}

async fn post(c: &awc::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let mut res = c
        .post(url)
        .send_json(body)
        .await
        .map_err(|e| anyhow::anyhow!("POST {url}: {e}"))?;
    let bytes = res
        .body()
        .limit(64 << 20)
        .await
        .map_err(|e| anyhow::anyhow!("POST {url}: {e}"))?;
    if !res.status().is_success() {
        bail!(
            "POST {url}: {} {}",
            res.status(),
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(serde_json::from_slice(&bytes)?)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub fn run(w: HttpWorkload) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(async move {
        if w.scrape_partitions > 0 {
            scrape_run(&w).await
        } else {
            produce_run(&w, &w.topic).await.map(|_| ())
        }
    })
}

/// Creates a topic over HTTP.
async fn create_topic(
    c: &awc::Client,
    w: &HttpWorkload,
    name: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let mut configs = serde_json::Map::new();
    if w.fsync_each {
        configs.insert("flush.messages".into(), json!("1"));
    }
    post(
        c,
        &format!("{}/topics", w.url),
        &json!({"name": name, "partitions": partitions, "configs": configs}),
    )
    .await
    .with_context(|| format!("creating {name}"))?;
    Ok(())
}

/// Produces `w.messages` records in batches of `w.batch` from `w.publishers` loops; answers
/// the rate (and prints it with the latency).
async fn produce_run(w: &HttpWorkload, topic: &str) -> anyhow::Result<f64> {
    let c = client();
    create_topic(&c, w, topic, w.partitions).await?;
    let value = "x".repeat(w.record_size);
    let batch: Vec<Value> = (0..w.batch).map(|_| json!({ "value": value })).collect();
    let body = Arc::new(json!({ "records": batch }));
    let url = Arc::new(format!("{}/topics/{topic}/records", w.url));
    let requests = w.messages.div_ceil(w.batch as u64);
    let per = requests.div_ceil(w.publishers as u64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..w.publishers {
        let (body, url) = (body.clone(), url.clone());
        tasks.push(actix_rt::spawn(async move {
            let c = client();
            let mut h = Histogram::<u64>::new(3).unwrap();
            for _ in 0..per {
                let t = Instant::now();
                post(&c, &url, &body).await?;
                h.record(t.elapsed().as_micros() as u64).ok();
            }
            anyhow::Ok(h)
        }));
    }
    let mut h = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        h.add(t.await??).ok();
    }
    let secs = started.elapsed().as_secs_f64();
    let records = (per * w.publishers as u64 * w.batch as u64) as f64;
    let rate = records / secs;
    println!(
        "http produce: {} publishers, batches of {} x {} B, {}: {:.0} records/s, {:.1} MB/s; request p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        w.publishers,
        w.batch,
        w.record_size,
        if w.fsync_each { "fsync before every answer (flush.messages=1)" } else { "broker default flush policy" },
        rate,
        rate * w.record_size as f64 / 1e6,
        ms(&h, 0.5),
        ms(&h, 0.99),
        h.max() as f64 / 1000.0,
    );
    Ok(rate)
}

/// Times `n` scrapes of `/metrics`, `interval` apart; answers the histogram (µs) and the last
/// body's size.
async fn time_scrapes(
    url: &str,
    n: usize,
    stop: Option<&AtomicBool>,
    interval: Duration,
) -> anyhow::Result<(Histogram<u64>, usize)> {
    let c = client();
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut size = 0;
    for _ in 0..n {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        let t = Instant::now();
        let mut res = c
            .get(format!("{url}/metrics"))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GET /metrics: {e}"))?;
        let body = res
            .body()
            .limit(256 << 20)
            .await
            .map_err(|e| anyhow::anyhow!("GET /metrics: {e}"))?;
        h.record(t.elapsed().as_micros() as u64).ok();
        size = body.len();
        if !interval.is_zero() {
            actix_rt::time::sleep(interval).await;
        }
    }
    Ok((h, size))
}

async fn scrape_run(w: &HttpWorkload) -> anyhow::Result<()> {
    let c = client();
    let topics = w.scrape_partitions.div_ceil(10);
    for t in 0..topics {
        create_topic(&c, w, &format!("{}-m{t}", w.topic), 10).await?;
    }
    for g in 0..w.scrape_groups {
        let topic = format!("{}-m{}", w.topic, g % topics);
        post(
            &c,
            &format!("{}/groups/{}-g{g}/offsets/reset", w.url, w.topic),
            &json!({"topic": topic, "to": "earliest"}),
        )
        .await?;
    }
    let (h, size) = time_scrapes(&w.url, w.scrapes, None, Duration::ZERO).await?;
    println!(
        "scrape, idle: {} partitions, {} groups, {} KiB: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} scrapes",
        topics * 10,
        w.scrape_groups,
        size / 1024,
        ms(&h, 0.5),
        ms(&h, 0.99),
        h.max() as f64 / 1000.0,
        h.len()
    );
    // Produce alone, then produce while another client scrapes back to back.
    let alone = produce_run(w, &format!("{}-alone", w.topic)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (url, stop) = (w.url.clone(), stop.clone());
        let interval = Duration::from_millis(w.scrape_interval_ms);
        actix_rt::spawn(async move { time_scrapes(&url, usize::MAX, Some(&stop), interval).await })
    };
    let busy = produce_run(w, &format!("{}-busy", w.topic)).await?;
    stop.store(true, Ordering::Relaxed);
    let (h, _) = scraper.await??;
    println!(
        "scrape every {} ms during produce: p50 {:.1} ms, p99 {:.1} ms over {} scrapes; produce {:.0} records/s alone, {:.0} while scraped ({:+.1}%)",
        w.scrape_interval_ms,
        ms(&h, 0.5),
        ms(&h, 0.99),
        h.len(),
        alone,
        busy,
        (busy / alone - 1.0) * 100.0
    );
    Ok(())
}
