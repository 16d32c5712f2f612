//! What the harness writes into every message, and how consumers check delivery.
//!
//! Each payload starts with a 20-byte header: the microsecond wall-clock time the message was
//! due (its intended send time at a fixed rate, so latency includes any wait the broker caused:
//! no coordinated omission), the producer's number and the message's sequence number within
//! that producer. The rest is filler, random or repeated as the workload asks.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::workload::HEADER_LEN;

/// Microseconds since the Unix epoch (producers and consumers run on the same machine).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A message's identity and due time, read back from its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub due_us: u64,
    pub producer: u32,
    pub seq: u64,
}

impl Header {
    pub fn write(&self, payload: &mut [u8]) {
        payload[..8].copy_from_slice(&self.due_us.to_be_bytes());
        payload[8..12].copy_from_slice(&self.producer.to_be_bytes());
        payload[12..20].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// The header of `payload`, or `None` when it is too short to be the harness's.
    pub fn read(payload: &[u8]) -> Option<Header> {
        if payload.len() < HEADER_LEN {
            return None;
        }
        Some(Header {
            due_us: u64::from_be_bytes(payload[..8].try_into().ok()?),
            producer: u32::from_be_bytes(payload[8..12].try_into().ok()?),
            seq: u64::from_be_bytes(payload[12..20].try_into().ok()?),
        })
    }
}

/// A payload template: filler bytes that each message copies before its header is written.
pub fn filler(size: usize, randomness: f64) -> Vec<u8> {
    let random = (size as f64 * randomness) as usize;
    let mut out = vec![b'x'; size];
    for b in &mut out[..random] {
        *b = fastrand::u8(..);
    }
    out
}

/// Which messages a subscription has received: one bit per (producer, sequence), so
/// duplicates and gaps are counted exactly.
#[derive(Default)]
pub struct Seen {
    bits: Mutex<Vec<Vec<u64>>>,
}

/// What a subscription received against what was published.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeliveryCheck {
    /// Distinct messages received.
    pub received: u64,
    /// Messages received more than once (each extra copy counts).
    pub duplicates: u64,
    /// Messages published and confirmed but never received.
    pub missing: u64,
}

impl Seen {
    /// Marks one message; true when it was new.
    pub fn mark(&self, h: &Header) -> bool {
        let mut bits = self.bits.lock().expect("seen lock");
        let p = h.producer as usize;
        if bits.len() <= p {
            bits.resize_with(p + 1, Vec::new);
        }
        let words = &mut bits[p];
        let (w, bit) = ((h.seq / 64) as usize, h.seq % 64);
        if words.len() <= w {
            words.resize(w + 1, 0);
        }
        let new = words[w] & (1 << bit) == 0;
        words[w] |= 1 << bit;
        new
    }

    /// Distinct messages seen of the first `published[p]` of each producer `p` (the ones it
    /// had confirmed), and how many of those are missing.
    pub fn check(&self, published: &[u64], duplicates: u64) -> DeliveryCheck {
        let bits = self.bits.lock().expect("seen lock");
        let mut received = 0;
        let mut missing = 0;
        for (p, &count) in published.iter().enumerate() {
            let words = bits.get(p).map_or(&[][..], Vec::as_slice);
            let seen = (0..count)
                .filter(|s| {
                    words
                        .get((s / 64) as usize)
                        .is_some_and(|w| w & (1 << (s % 64)) != 0)
                })
                .count() as u64;
            received += seen;
            missing += count - seen;
        }
        DeliveryCheck {
            received,
            duplicates,
            missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_seen_counts_gaps_and_copies() {
        let mut p = filler(64, 0.5);
        let h = Header {
            due_us: 7,
            producer: 2,
            seq: 130,
        };
        h.write(&mut p);
        assert_eq!(Header::read(&p), Some(h));
        assert_eq!(Header::read(&p[..10]), None);
        let seen = Seen::default();
        let mut dups = 0;
        for seq in [0, 1, 1, 3] {
            if !seen.mark(&Header { seq, ..h }) {
                dups += 1;
            }
        }
        // Producer 2 confirmed 4 messages (0..4): 2 is missing; 0 and 1 of producer 0 too.
        let c = seen.check(&[2, 0, 4], dups);
        assert_eq!(
            c,
            DeliveryCheck {
                received: 3,
                duplicates: 1,
                missing: 3
            }
        );
    }
}
