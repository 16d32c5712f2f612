//! Committed offsets of every group, kept durable in a [`Journal`] of commit frames, as Kafka
//! keeps them in `__consumer_offsets`.
//!
//! Only the [`OffsetsJournal`] actor writes the journal. Group actors own their offsets in memory
//! and send every change here before answering the client.

use std::collections::HashMap;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::journal::{Journal, JournalPlace, JournalState};
use crate::supervision::EndNotice;
use crate::BrokerError;

/// Where the journal lives under the data directory, and its key in the log-start table.
pub const JOURNAL_DIR: &str = "__group_offsets";

/// A committed offset, as OffsetCommit carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

/// A partition of a topic, as groups key their offsets.
pub type TopicPartition = (String, i32);

/// Every group's offsets.
pub type AllOffsets = HashMap<String, HashMap<TopicPartition, CommittedOffset>>;

/// One frame of the journal: changes to one group's offsets (`None` deletes).
#[derive(Debug, Serialize, Deserialize)]
pub struct JournalFrame {
    group: String,
    changes: Vec<(String, i32, Option<CommittedOffset>)>,
}

/// Every group's offsets, as the journal rebuilds them.
#[derive(Default)]
pub struct GroupOffsets(AllOffsets);

impl JournalState for GroupOffsets {
    type Frame = JournalFrame;

    fn apply(&mut self, frame: JournalFrame) {
        let offsets = self.0.entry(frame.group.clone()).or_default();
        for (topic, partition, change) in frame.changes {
            match change {
                Some(c) => {
                    offsets.insert((topic, partition), c);
                }
                None => {
                    offsets.remove(&(topic, partition));
                }
            }
        }
        if offsets.is_empty() {
            self.0.remove(&frame.group);
        }
    }

    fn snapshot(&self) -> Vec<JournalFrame> {
        self.0
            .iter()
            .map(|(group, offsets)| JournalFrame {
                group: group.clone(),
                changes: offsets
                    .iter()
                    .map(|((t, p), c)| (t.clone(), *p, Some(c.clone())))
                    .collect(),
            })
            .collect()
    }
}

/// The journal writer.
pub struct OffsetsJournal {
    journal: Journal<GroupOffsets>,
    /// Tells the group registry when this actor ends (declared last: dropped after the
    /// journal, so a restart opens it after this one closed it).
    end_notice: Option<EndNotice>,
}

impl OffsetsJournal {
    /// Opens (recovering) the journal at `place` and replays it. Also returns the groups that
    /// have offsets.
    pub fn open(place: &JournalPlace) -> Result<(OffsetsJournal, Vec<String>), BrokerError> {
        let journal = place.open::<GroupOffsets>(JOURNAL_DIR)?;
        let groups: Vec<String> = journal.state().0.keys().cloned().collect();
        info!(groups = groups.len(), "group offsets replayed");
        Ok((
            OffsetsJournal {
                journal,
                end_notice: None,
            },
            groups,
        ))
    }

    /// Reports this actor's end to its supervisor, however it ends.
    pub fn with_end_notice(mut self, notice: EndNotice) -> OffsetsJournal {
        self.end_notice = Some(notice);
        self
    }
}

#[cfg(debug_assertions)]
impl Handler<crate::faults::InjectPanic> for OffsetsJournal {
    type Result = ();

    fn handle(&mut self, msg: crate::faults::InjectPanic, _: &mut Context<Self>) {
        msg.strike(format_args!("the group offsets journal"));
    }
}

/// Milliseconds since the Unix epoch, as commit timestamps record them.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Actor for OffsetsJournal {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        Journal::keep_synced(self, ctx, |a| &mut a.journal);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.journal.flush();
    }
}

impl Handler<crate::supervision::StopActor> for OffsetsJournal {
    type Result = ();

    /// Fsyncs the journal, then stops: answered once everything recorded is durable.
    fn handle(&mut self, _: crate::supervision::StopActor, ctx: &mut Context<Self>) {
        self.journal.flush();
        ctx.stop();
    }
}

/// Records changes to one group's offsets; answered once they are in the journal.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct RecordOffsets {
    pub group: String,
    /// `None` deletes the partition's offset.
    pub changes: Vec<(TopicPartition, Option<CommittedOffset>)>,
}

impl Handler<RecordOffsets> for OffsetsJournal {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: RecordOffsets, _: &mut Context<Self>) -> Self::Result {
        let frame = JournalFrame {
            group: msg.group,
            changes: msg
                .changes
                .into_iter()
                .map(|((t, p), c)| (t, p, c))
                .collect(),
        };
        self.journal.record(frame)
    }
}

/// One group's offsets, as a (re)starting group actor loads them.
#[derive(Message)]
#[rtype(result = "HashMap<TopicPartition, CommittedOffset>")]
pub struct LoadGroupOffsets {
    pub group: String,
}

impl Handler<LoadGroupOffsets> for OffsetsJournal {
    type Result = MessageResult<LoadGroupOffsets>;

    fn handle(&mut self, msg: LoadGroupOffsets, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.journal
                .state()
                .0
                .get(&msg.group)
                .cloned()
                .unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_store::MetaStore;
    use std::sync::Arc;

    fn commit(offset: i64) -> Option<CommittedOffset> {
        Some(CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: format!("m{offset}"),
            commit_ms: 1,
        })
    }

    #[test]
    fn offsets_survive_reopen_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let place = JournalPlace {
            data_dir: dir.path().to_path_buf(),
            meta: Arc::new(MetaStore::open(&dir.path().join("meta.redb")).unwrap()),
            flush_ms: None,
        };
        {
            let (mut j, groups) = OffsetsJournal::open(&place).unwrap();
            assert!(groups.is_empty());
            for i in 0..100 {
                let frame = JournalFrame {
                    group: "g".into(),
                    changes: vec![("t".into(), i % 3, commit(i as i64))],
                };
                j.journal.record(frame).unwrap();
            }
            let gone = JournalFrame {
                group: "h".into(),
                changes: vec![("t".into(), 0, commit(5)), ("t".into(), 0, None)],
            };
            j.journal.record(gone).unwrap();
            j.journal.snapshot().unwrap();
            let after = JournalFrame {
                group: "g".into(),
                changes: vec![("u".into(), 0, commit(7))],
            };
            j.journal.record(after).unwrap();
            j.journal.flush_for_test();
        }
        let (j, groups) = OffsetsJournal::open(&place).unwrap();
        assert_eq!(groups, ["g"]);
        let live = &j.journal.state().0;
        let g = &live["g"];
        assert_eq!(g[&("t".to_string(), 0)].offset, 99);
        assert_eq!(g[&("t".to_string(), 1)].offset, 97);
        assert_eq!(g[&("t".to_string(), 1)].metadata, "m97");
        assert_eq!(g[&("u".to_string(), 0)].offset, 7);
        assert!(!live.contains_key("h"), "deleted offsets stay deleted");
        assert!(
            j.journal.log().log_start_offset() > 0,
            "history before the snapshot is dropped"
        );
    }
}
