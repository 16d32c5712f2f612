//! The Raft log, vote and state-machine snapshots of the metadata quorum, in one redb file
//! (`cluster.redb`, beside `meta.redb`), for openraft's v2 storage traits.
//!
//! The log and the vote are written with immediate durability before openraft is told they
//! are: that is what makes a vote or an acknowledged entry survive a crash. The state machine
//! lives in memory; it is rebuilt at start from the last snapshot (kept in the same file) and
//! the committed entries after it, which openraft applies again.

// openraft's traits return its `StorageError` (over 200 bytes): the helpers here return it too.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, RwLock};

use crate::metadata::{Metadata, NodeId, Outcome};
use crate::TypeConfig;

/// Log entries by index (JSON).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// The vote, the committed log id, the last purged log id and the snapshot (JSON each).
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";
const SNAPSHOT: &str = "snapshot";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

fn write_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    io_error(ErrorSubject::Store, ErrorVerb::Write, e)
}

fn read_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    io_error(ErrorSubject::Store, ErrorVerb::Read, e)
}

/// Opens (creating) the quorum's redb file.
pub fn open_database(path: &Path) -> Result<Arc<Database>, redb::DatabaseError> {
    let db = Database::create(path)?;
    Ok(Arc::new(db))
}

fn get_json<T: for<'de> Deserialize<'de>>(db: &Database, key: &str) -> StorageResult<Option<T>> {
    let tx = db.begin_read().map_err(read_error)?;
    let table = match tx.open_table(STATE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    let Some(v) = table.get(key).map_err(read_error)? else {
        return Ok(None);
    };
    serde_json::from_slice(v.value())
        .map(Some)
        .map_err(read_error)
}

fn put_json<T: Serialize>(db: &Database, key: &str, value: &T) -> StorageResult<()> {
    let bytes = serde_json::to_vec(value).map_err(write_error)?;
    let mut tx = db.begin_write().map_err(write_error)?;
    tx.set_durability(Durability::Immediate)
        .map_err(write_error)?;
    {
        let mut table = tx.open_table(STATE).map_err(write_error)?;
        table.insert(key, bytes.as_slice()).map_err(write_error)?;
    }
    tx.commit().map_err(write_error)
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// The log kept in `db`.
    pub fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }

    fn last_entry(&self) -> StorageResult<Option<LogId<NodeId>>> {
        let tx = self.db.begin_read().map_err(read_error)?;
        let table = match tx.open_table(LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_error(e)),
        };
        let Some((_, v)) = table.last().map_err(read_error)? else {
            return Ok(None);
        };
        let entry: Entry<TypeConfig> = serde_json::from_slice(v.value()).map_err(read_error)?;
        Ok(Some(entry.log_id))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let tx = self.db.begin_read().map_err(read_error)?;
        let table = match tx.open_table(LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(read_error(e)),
        };
        let mut out = Vec::new();
        for item in table.range(range).map_err(read_error)? {
            let (_, v) = item.map_err(read_error)?;
            out.push(serde_json::from_slice(v.value()).map_err(read_error)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> = get_json(&self.db, PURGED)?;
        let last_log_id = self.last_entry()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        put_json(&self.db, VOTE, vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        get_json(&self.db, VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        put_json(&self.db, COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(get_json::<Option<LogId<NodeId>>>(&self.db, COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // One durable transaction for everything appended at once.
        let result = (|| {
            let mut tx = self.db.begin_write().map_err(write_error)?;
            tx.set_durability(Durability::Immediate)
                .map_err(write_error)?;
            {
                let mut table = tx.open_table(LOG).map_err(write_error)?;
                for entry in entries {
                    let bytes = serde_json::to_vec(&entry).map_err(write_error)?;
                    table
                        .insert(entry.log_id.index, bytes.as_slice())
                        .map_err(write_error)?;
                }
            }
            tx.commit().map_err(write_error)
        })();
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut tx = self.db.begin_write().map_err(write_error)?;
        tx.set_durability(Durability::Immediate)
            .map_err(write_error)?;
        {
            let mut table = tx.open_table(LOG).map_err(write_error)?;
            table
                .retain_in(log_id.index.., |_, _| false)
                .map_err(write_error)?;
        }
        tx.commit().map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut tx = self.db.begin_write().map_err(write_error)?;
        tx.set_durability(Durability::Immediate)
            .map_err(write_error)?;
        {
            let bytes = serde_json::to_vec(&Some(log_id)).map_err(write_error)?;
            let mut state = tx.open_table(STATE).map_err(write_error)?;
            state
                .insert(PURGED, bytes.as_slice())
                .map_err(write_error)?;
            let mut table = tx.open_table(LOG).map_err(write_error)?;
            table
                .retain_in(..=log_id.index, |_, _| false)
                .map_err(write_error)?;
        }
        tx.commit().map_err(write_error)
    }
}

/// A snapshot as stored: its metadata and the state machine's JSON.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// The applied state: the metadata and where in the log it stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, openraft::BasicNode>,
    pub metadata: Metadata,
}

/// The metadata state machine: applies committed commands, and publishes each new state.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    applied: Arc<RwLock<Applied>>,
    /// The metadata after every apply, for the node's image and readiness.
    published: Arc<watch::Sender<Arc<Applied>>>,
}

impl StateMachineStore {
    /// The state machine kept in `db`, resumed from its last snapshot.
    pub fn open(db: Arc<Database>) -> StorageResult<StateMachineStore> {
        let applied = match get_json::<StoredSnapshot>(&db, SNAPSHOT)? {
            Some(s) => Applied {
                last_applied: s.meta.last_log_id,
                membership: s.meta.last_membership.clone(),
                metadata: serde_json::from_slice(&s.data).map_err(read_error)?,
            },
            None => Applied::default(),
        };
        let (published, _) = watch::channel(Arc::new(applied.clone()));
        Ok(StateMachineStore {
            db,
            applied: Arc::new(RwLock::new(applied)),
            published: Arc::new(published),
        })
    }

    /// Each new applied state, as it happens.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Applied>> {
        self.published.subscribe()
    }

    fn publish(&self, applied: &Applied) {
        self.published.send_replace(Arc::new(applied.clone()));
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let applied = self.applied.read().await;
        let data = serde_json::to_vec(&applied.metadata).map_err(write_error)?;
        let snapshot_id = match applied.last_applied {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        drop(applied);
        put_json(
            &self.db,
            SNAPSHOT,
            &StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            },
        )?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<NodeId>>,
        StoredMembership<NodeId, openraft::BasicNode>,
    )> {
        let applied = self.applied.read().await;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut applied = self.applied.write().await;
        let mut out = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => Outcome::Done,
                EntryPayload::Normal(command) => applied.metadata.apply(command),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    Outcome::Done
                }
            });
        }
        self.publish(&applied);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let metadata: Metadata = serde_json::from_slice(&data).map_err(|e| {
            io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e,
            )
        })?;
        put_json(
            &self.db,
            SNAPSHOT,
            &StoredSnapshot {
                meta: meta.clone(),
                data,
            },
        )?;
        let mut applied = self.applied.write().await;
        *applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            metadata,
        };
        self.publish(&applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(
            get_json::<StoredSnapshot>(&self.db, SNAPSHOT)?.map(|s| Snapshot {
                meta: s.meta,
                snapshot: Box::new(Cursor::new(s.data)),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachineStore)> {
            let dir = tempfile::tempdir().map_err(write_error)?;
            let db = open_database(&dir.path().join("cluster.redb")).map_err(write_error)?;
            let sm = StateMachineStore::open(db.clone())?;
            Ok((dir, LogStore::new(db), sm))
        }
    }

    /// openraft's own conformance suite for storage implementations.
    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(Builder).unwrap();
    }
}
