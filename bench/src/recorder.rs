//! Counters and HDR histograms shared by every producer and consumer of a run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::result::Percentiles;

/// Latencies are recorded in microseconds, up to an hour.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// A histogram for the whole measured window and one for the current second.
struct Latencies {
    window: Histogram<u64>,
    second: Histogram<u64>,
}

impl Latencies {
    fn new() -> Self {
        Latencies {
            window: histogram(),
            second: histogram(),
        }
    }
}

/// What producers and consumers report to.
pub struct Recorder {
    recording: AtomicBool,
    publish: Mutex<Latencies>,
    end_to_end: Mutex<Latencies>,
    /// In the measured window.
    published: AtomicU64,
    consumed: AtomicU64,
    /// Since the start, for flow control and progress.
    pub sent_total: AtomicU64,
    pub delivered_total: AtomicU64,
    pub errors: AtomicU64,
    window: Mutex<(Option<Instant>, Option<Duration>)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            recording: AtomicBool::new(false),
            publish: Mutex::new(Latencies::new()),
            end_to_end: Mutex::new(Latencies::new()),
            published: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            sent_total: AtomicU64::new(0),
            delivered_total: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            window: Mutex::new((None, None)),
        }
    }
}

fn record(l: &Mutex<Latencies>, us: u64) {
    let mut l = l.lock().expect("latency lock");
    let us = us.max(1);
    let _ = l.window.record(us);
    let _ = l.second.record(us);
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        p50: ms(0.5),
        p75: ms(0.75),
        p95: ms(0.95),
        p99: ms(0.99),
        p999: ms(0.999),
        max: h.max() as f64 / 1000.0,
        count: h.len(),
    }
}

impl Recorder {
    /// Starts the measured window: what came before (warm-up) is forgotten.
    pub fn start_window(&self) {
        for l in [&self.publish, &self.end_to_end] {
            let mut l = l.lock().expect("latency lock");
            l.window.reset();
            l.second.reset();
        }
        self.published.store(0, Ordering::Relaxed);
        self.consumed.store(0, Ordering::Relaxed);
        *self.window.lock().expect("window lock") = (Some(Instant::now()), None);
        self.recording.store(true, Ordering::Release);
    }

    /// Ends the measured window; later events are not recorded.
    pub fn end_window(&self) {
        self.recording.store(false, Ordering::Release);
        let mut w = self.window.lock().expect("window lock");
        w.1 = w.0.map(|s| s.elapsed());
    }

    /// The measured window's length.
    pub fn window_seconds(&self) -> f64 {
        let w = self.window.lock().expect("window lock");
        match *w {
            (_, Some(d)) => d.as_secs_f64(),
            (Some(s), None) => s.elapsed().as_secs_f64(),
            _ => 0.0,
        }
    }

    fn recording(&self) -> bool {
        self.recording.load(Ordering::Acquire)
    }

    /// A send was confirmed `latency` after it was due.
    pub fn confirmed(&self, latency: Duration) {
        if self.recording() {
            self.published.fetch_add(1, Ordering::Relaxed);
            record(&self.publish, latency.as_micros() as u64);
        }
    }

    /// A message reached a consumer `latency_us` after it was due.
    pub fn delivered(&self, latency_us: u64) {
        self.delivered_total.fetch_add(1, Ordering::Relaxed);
        if self.recording() {
            self.consumed.fetch_add(1, Ordering::Relaxed);
            record(&self.end_to_end, latency_us);
        }
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// (published, consumed) in the window so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.published.load(Ordering::Relaxed),
            self.consumed.load(Ordering::Relaxed),
        )
    }

    /// The window's percentiles: (publish, end to end).
    pub fn percentiles(&self) -> (Percentiles, Percentiles) {
        let p = percentiles(&self.publish.lock().expect("latency lock").window);
        let e = percentiles(&self.end_to_end.lock().expect("latency lock").window);
        (p, e)
    }

    /// The last second's p99s in ms (publish, end to end), and a fresh second begins.
    pub fn take_second(&self) -> (f64, f64) {
        let take = |l: &Mutex<Latencies>| {
            let mut l = l.lock().expect("latency lock");
            let p99 = if l.second.is_empty() {
                0.0
            } else {
                l.second.value_at_quantile(0.99) as f64 / 1000.0
            };
            l.second.reset();
            p99
        };
        (take(&self.publish), take(&self.end_to_end))
    }
}
