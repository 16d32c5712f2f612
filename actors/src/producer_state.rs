//! Idempotent-producer state of one partition: the last few batches of each producer, so a
//! retried batch is acknowledged again without being written twice and a gap is refused.

use std::collections::{HashMap, VecDeque};

use spool_store::WriterInfo;

use crate::BrokerError;

/// Kafka keeps the last five batches per producer (max.in.flight.requests.per.connection).
const CACHED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy)]
struct CachedBatch {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: u64,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<CachedBatch>,
}

/// What to do with an incoming batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// New data: append it.
    Append,
    /// A retry of a batch already written at this base offset.
    Duplicate { base_offset: u64 },
}

#[derive(Debug, Default)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

fn last_sequence(first: i32, last_offset_delta: u32) -> i32 {
    ((first as i64 + last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

impl ProducerStates {
    /// Checks a batch from `writer` spanning `last_offset_delta + 1` records.
    pub fn check(
        &self,
        writer: &WriterInfo,
        last_offset_delta: u32,
    ) -> Result<SequenceCheck, BrokerError> {
        let first = writer.first_sequence;
        let last = last_sequence(first, last_offset_delta);
        let Some(entry) = self.producers.get(&writer.id) else {
            return if first == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(BrokerError::UnknownProducerId(writer.id))
            };
        };
        if writer.epoch < entry.epoch {
            return Err(BrokerError::InvalidProducerEpoch {
                producer_id: writer.id,
                got: writer.epoch,
                current: entry.epoch,
            });
        }
        if writer.epoch > entry.epoch {
            return if first == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(BrokerError::OutOfOrderSequence {
                    producer_id: writer.id,
                    expected: 0,
                    got: first,
                })
            };
        }
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == first && b.last_sequence == last)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: b.base_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |b| next_sequence(b.last_sequence));
        if first != expected {
            return Err(BrokerError::OutOfOrderSequence {
                producer_id: writer.id,
                expected,
                got: first,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch that was appended at `base_offset`.
    pub fn record(&mut self, writer: &WriterInfo, last_offset_delta: u32, base_offset: u64) {
        let entry = self.producers.entry(writer.id).or_default();
        if writer.epoch != entry.epoch {
            entry.epoch = writer.epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(CachedBatch {
            first_sequence: writer.first_sequence,
            last_sequence: last_sequence(writer.first_sequence, last_offset_delta),
            base_offset,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(seq: i32, epoch: i16) -> WriterInfo {
        WriterInfo {
            id: 7,
            epoch,
            first_sequence: seq,
        }
    }

    #[test]
    fn duplicates_are_recognised_and_gaps_refused() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&w(0, 0), 4).unwrap(), SequenceCheck::Append);
        s.record(&w(0, 0), 4, 100);
        assert_eq!(
            s.check(&w(0, 0), 4).unwrap(),
            SequenceCheck::Duplicate { base_offset: 100 }
        );
        assert!(matches!(
            s.check(&w(6, 0), 0),
            Err(BrokerError::OutOfOrderSequence { expected: 5, .. })
        ));
        assert_eq!(s.check(&w(5, 0), 0).unwrap(), SequenceCheck::Append);
        assert!(matches!(
            s.check(&w(5, -1), 0),
            Err(BrokerError::InvalidProducerEpoch { .. })
        ));
        assert_eq!(s.check(&w(0, 1), 0).unwrap(), SequenceCheck::Append);
        // A producer this partition has never seen must start at sequence 0.
        assert!(matches!(
            ProducerStates::default().check(&w(3, 0), 0),
            Err(BrokerError::UnknownProducerId(7))
        ));
    }
}
