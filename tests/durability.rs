//! Durability: what the broker acknowledged survives SIGKILL, and a torn segment tail is
//! truncated on recovery.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{consume, producer, value, Spool};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_records_survive_sigkill() {
    let mut spool = Spool::start();
    let bootstrap = spool.bootstrap();
    let p = producer(
        &bootstrap,
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "3000"),
        ],
    );
    let acked = Arc::new(Mutex::new(Vec::<(i64, String)>::new()));
    let mut tasks = Vec::new();
    let mut sent = 0;
    // Produce until a good number are acknowledged, then kill the broker mid-stream.
    while acked.lock().unwrap().len() < 3000 {
        for _ in 0..100 {
            let payload = format!("rec-{sent}");
            sent += 1;
            let f = p
                .send_result(FutureRecord::<(), _>::to("durable").payload(&payload))
                .unwrap();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                if let Ok(Ok(d)) = f.await {
                    acked.lock().unwrap().push((d.offset, payload));
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    spool.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    drop(p);
    spool.launch();
    let max_offset = acked.iter().map(|(o, _)| *o).max().unwrap();
    let got = consume(
        &spool.bootstrap(),
        "durable",
        0,
        Offset::Beginning,
        max_offset as usize + 1,
    );
    let mut seen = HashSet::new();
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.offset(), i as i64, "offsets are dense");
        assert!(seen.insert(value(m)), "no duplicate of {}", value(m));
    }
    for (offset, payload) in &acked {
        assert_eq!(
            &value(&got[*offset as usize]),
            payload,
            "acknowledged record at {offset}"
        );
    }
    // Values appear in the order they were produced.
    let order: Vec<u64> = got.iter().map(|m| value(m)[4..].parse().unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_segment_cut_mid_batch_is_truncated_on_recovery() {
    let mut spool = Spool::start();
    let p = producer(&spool.bootstrap(), &[("linger.ms", "0")]);
    for i in 0..20 {
        p.send(
            FutureRecord::<(), _>::to("torn").payload(&format!("v{i}")),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    drop(p);
    spool.kill9();
    let seg = spool
        .data_dir()
        .join("torn-0")
        .join(format!("{:020}.log", 0));
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    spool.launch();
    let got = consume(&spool.bootstrap(), "torn", 0, Offset::Beginning, 19);
    assert_eq!(value(&got[18]), "v18");
    assert!(
        spool.log().contains("truncated corrupt or torn tail"),
        "{}",
        spool.log()
    );
    // The log continues from the truncation point.
    let p = producer(&spool.bootstrap(), &[]);
    let d = p
        .send(
            FutureRecord::<(), _>::to("torn").payload("after"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(d.offset, 19);
}
