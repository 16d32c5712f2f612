//! Publisher confirms of one channel, sent as RabbitMQ sends them: acknowledgements that
//! leave nothing unconfirmed below them go out as one `basic.ack` with `multiple`, so a client
//! with a window of a thousand publishes gets a few frames per append instead of a thousand.
//!
//! Plain state, no I/O: the connection adds each publish's outcome as it is decided and sends
//! what [`Confirms::take`] returns before it next writes.

use std::collections::BTreeSet;

/// One confirm method to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirm {
    pub delivery_tag: u64,
    /// Covers every unconfirmed publish up to `delivery_tag`.
    pub multiple: bool,
    /// `basic.ack` (else `basic.nack`).
    pub ack: bool,
}

/// The confirm state of one channel in confirm mode.
#[derive(Debug, Default)]
pub struct Confirms {
    /// Every publish up to this sequence number is confirmed to the client.
    through: u64,
    /// Confirmed above `through`: appends to different queues finish in any order.
    ahead: BTreeSet<u64>,
    /// Decided since the last [`Confirms::take`]: (sequence number, appended).
    decided: Vec<(u64, bool)>,
}

impl Confirms {
    /// Records that publish `seq` was appended everywhere it went (`ok`) or not.
    pub fn add(&mut self, seq: u64, ok: bool) {
        self.decided.push((seq, ok));
    }

    /// True when something waits to be sent.
    pub fn pending(&self) -> bool {
        !self.decided.is_empty()
    }

    /// The methods that confirm everything decided since the last call. A run of
    /// acknowledgements that starts right after everything already confirmed becomes one
    /// `multiple` ack; nacks, and acks with an unconfirmed publish below them, go one by one.
    pub fn take(&mut self) -> Vec<Confirm> {
        let mut decided = std::mem::take(&mut self.decided);
        decided.sort_unstable();
        let mut out = Vec::new();
        // The run of acks that extends `through`: its first and last sequence numbers.
        let mut run: Option<(u64, u64)> = None;
        for (seq, ok) in decided {
            if ok && seq == self.through + 1 {
                self.through = seq;
                run = Some((run.map_or(seq, |r| r.0), seq));
            } else {
                Self::end_run(&mut run, &mut out);
                out.push(Confirm {
                    delivery_tag: seq,
                    multiple: false,
                    ack: ok,
                });
                if seq > self.through {
                    self.ahead.insert(seq);
                }
            }
            // Publishes confirmed one by one earlier join the confirmed prefix (a later
            // `multiple` ack may cover them: they are already confirmed, so nothing changes
            // for them).
            while self.ahead.remove(&(self.through + 1)) {
                self.through += 1;
                if let Some(r) = &mut run {
                    r.1 = self.through;
                }
            }
        }
        Self::end_run(&mut run, &mut out);
        out
    }

    fn end_run(run: &mut Option<(u64, u64)>, out: &mut Vec<Confirm>) {
        if let Some((first, last)) = run.take() {
            out.push(Confirm {
                delivery_tag: last,
                multiple: last > first,
                ack: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(tag: u64, multiple: bool) -> Confirm {
        Confirm {
            delivery_tag: tag,
            multiple,
            ack: true,
        }
    }

    #[test]
    fn a_run_in_order_is_one_multiple_ack() {
        let mut c = Confirms::default();
        for seq in 1..=1000 {
            c.add(seq, true);
        }
        assert_eq!(c.take(), [ack(1000, true)]);
        c.add(1001, true);
        assert_eq!(c.take(), [ack(1001, false)]);
        assert!(!c.pending());
    }

    #[test]
    fn a_gap_sends_acks_one_by_one_until_it_closes() {
        let mut c = Confirms::default();
        // 3 and 4 finish before 1 and 2 (another queue's append was slower).
        c.add(3, true);
        c.add(4, true);
        assert_eq!(c.take(), [ack(3, false), ack(4, false)]);
        c.add(1, true);
        c.add(2, true);
        c.add(5, true);
        // 1..=5 are all confirmed now; the multiple ack only repeats 3 and 4.
        assert_eq!(c.take(), [ack(5, true)]);
    }

    #[test]
    fn a_nack_is_never_covered_by_a_multiple_ack() {
        let mut c = Confirms::default();
        for (seq, ok) in [(1, true), (2, true), (3, false), (4, true), (5, true)] {
            c.add(seq, ok);
        }
        let nack = Confirm {
            delivery_tag: 3,
            multiple: false,
            ack: false,
        };
        // 1-2 as one, the nack alone; 4 and 5 follow the nacked 3, so they extend the prefix.
        assert_eq!(c.take(), [ack(2, true), nack, ack(5, true)]);
    }
}
