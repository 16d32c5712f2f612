//! Logs that cannot flood: each log statement (a tracing callsite) may write `per_second`
//! lines a second; the rest are counted, and the next line it writes is preceded by one that
//! says how many were suppressed. A loop that logs on every turn costs a counter increment, not
//! gigabytes of disk.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

const WINDOW: Duration = Duration::from_secs(1);

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write it; `suppressed` lines of the same statement were dropped since the last one
    /// written.
    Write { suppressed: u64 },
    /// Drop it (counted).
    Drop,
}

/// One statement's window: when it began, lines written in it, lines dropped since the last
/// line written.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    written: u32,
    suppressed: u64,
}

/// Per-statement rate limiting as a plain state machine (no I/O).
#[derive(Debug)]
pub struct RateLimit<K> {
    per_window: u32,
    sites: HashMap<K, Window>,
}

impl<K: std::hash::Hash + Eq> RateLimit<K> {
    /// At most `per_second` lines per statement per second (at least 1).
    pub fn new(per_second: u32) -> Self {
        RateLimit {
            per_window: per_second.max(1),
            sites: HashMap::new(),
        }
    }

    /// Decides about one event of statement `site` at `now`.
    pub fn admit(&mut self, site: K, now: Instant) -> Admit {
        let w = self.sites.entry(site).or_insert(Window {
            start: now,
            written: 0,
            suppressed: 0,
        });
        if now.duration_since(w.start) >= WINDOW {
            w.start = now;
            w.written = 0;
        }
        if w.written < self.per_window {
            w.written += 1;
            Admit::Write {
                suppressed: std::mem::take(&mut w.suppressed),
            }
        } else {
            w.suppressed += 1;
            Admit::Drop
        }
    }
}

/// The tracing layer: drops events over the limit for every layer of the subscriber.
pub struct RateLimitLayer {
    limit: Mutex<RateLimit<Identifier>>,
}

impl RateLimitLayer {
    /// At most `per_second` lines per log statement per second.
    pub fn new(per_second: u32) -> Self {
        RateLimitLayer {
            limit: Mutex::new(RateLimit::new(per_second)),
        }
    }
}

impl<S: Subscriber> Layer<S> for RateLimitLayer {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        let admit = {
            let mut limit = self.limit.lock().unwrap_or_else(|e| e.into_inner());
            limit.admit(meta.callsite(), Instant::now())
        };
        match admit {
            Admit::Drop => false,
            Admit::Write { suppressed: 0 } => true,
            Admit::Write { suppressed } => {
                // Its own statement, so it is limited like any other (and cannot recurse).
                tracing::warn!(
                    suppressed,
                    at = %format_args!("{}:{}", meta.file().unwrap_or("?"), meta.line().unwrap_or(0)),
                    "log lines suppressed: the next line's statement repeated more than the rate limit allows"
                );
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_writes_the_limit_then_counts() {
        let mut rl = RateLimit::new(3);
        let t0 = Instant::now();
        let got: Vec<Admit> = (0..10).map(|_| rl.admit("a", t0)).collect();
        assert_eq!(
            &got[..4],
            &[
                Admit::Write { suppressed: 0 },
                Admit::Write { suppressed: 0 },
                Admit::Write { suppressed: 0 },
                Admit::Drop
            ]
        );
        assert!(got[3..].iter().all(|a| *a == Admit::Drop));
        // Another statement has its own budget.
        assert_eq!(rl.admit("b", t0), Admit::Write { suppressed: 0 });
        // The next window's first line carries the count.
        let t1 = t0 + WINDOW;
        assert_eq!(rl.admit("a", t1), Admit::Write { suppressed: 7 });
        assert_eq!(rl.admit("a", t1), Admit::Write { suppressed: 0 });
    }

    #[test]
    fn a_million_events_in_a_second_write_the_limit() {
        let mut rl = RateLimit::new(10);
        let t0 = Instant::now();
        let written = (0..1_000_000u32)
            .filter(|i| {
                let at = t0 + Duration::from_micros(*i as u64 / 2);
                matches!(rl.admit(0u8, at), Admit::Write { .. })
            })
            .count();
        assert_eq!(written, 10);
    }
}
