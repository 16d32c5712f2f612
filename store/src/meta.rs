//! Broker metadata in redb: topics and their configs, log start offsets, and counters.
//!
//! Values are JSON (serde) so that the file stays readable with any redb tool and fields can
//! be added compatibly; see `docs/format.md`.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::StoreError;

const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");
const LOG_START: TableDefinition<(&str, u32), u64> = TableDefinition::new("log_start_offsets");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const CLUSTER: TableDefinition<&str, &str> = TableDefinition::new("cluster");
/// Other definitions the broker keeps (queues, exchanges, bindings), by kind and name.
const DEFINITIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("definitions");

/// A topic as the broker remembers it across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    /// 16-byte topic id (Kafka's topic UUID), kept for the topic's lifetime.
    pub id: [u8; 16],
    pub partitions: u32,
    /// Per-topic config overrides; absent keys take the broker defaults.
    pub configs: BTreeMap<String, String>,
    pub created_ms: u64,
}

/// The broker's metadata database.
pub struct MetaStore {
    db: Database,
}

impl MetaStore {
    pub fn open(path: &Path) -> Result<MetaStore, StoreError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(TOPICS)?;
        tx.open_table(LOG_START)?;
        tx.open_table(COUNTERS)?;
        tx.open_table(CLUSTER)?;
        tx.open_table(DEFINITIONS)?;
        tx.commit()?;
        Ok(MetaStore { db })
    }

    /// The cluster id, generated on first start and kept for the data directory's lifetime.
    pub fn cluster_id(&self) -> Result<String, StoreError> {
        let tx = self.db.begin_write()?;
        let id = {
            let mut t = tx.open_table(CLUSTER)?;
            let existing = t.get("cluster_id")?.map(|v| v.value().to_string());
            match existing {
                Some(id) => id,
                None => {
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0);
                    let id = format!("spool-{:x}-{:x}", nanos, std::process::id());
                    t.insert("cluster_id", id.as_str())?;
                    id
                }
            }
        };
        tx.commit()?;
        Ok(id)
    }

    pub fn topics(&self) -> Result<Vec<TopicRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(TOPICS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Inserts or replaces a topic.
    pub fn put_topic(&self, topic: &TopicRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(topic)?;
        let tx = self.db.begin_write()?;
        tx.open_table(TOPICS)?
            .insert(topic.name.as_str(), bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a topic and its partitions' start offsets.
    pub fn delete_topic(&self, name: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(TOPICS)?.remove(name)?;
        {
            let mut t = tx.open_table(LOG_START)?;
            t.retain_in((name, 0)..=(name, u32::MAX), |_, _| false)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn log_start_offset(&self, topic: &str, partition: u32) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(LOG_START)?;
        Ok(t.get((topic, partition))?.map_or(0, |v| v.value()))
    }

    pub fn set_log_start_offset(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(LOG_START)?
            .insert((topic, partition), offset)?;
        tx.commit()?;
        Ok(())
    }

    /// Every definition of one kind, as (name, JSON bytes). The store does not interpret them.
    pub fn definitions(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(DEFINITIONS)?;
        let mut out = Vec::new();
        for entry in t.range((kind, "")..)? {
            let (k, v) = entry?;
            let (k_kind, name) = k.value();
            if k_kind != kind {
                break;
            }
            out.push((name.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Inserts or replaces a definition.
    pub fn put_definition(&self, kind: &str, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(DEFINITIONS)?.insert((kind, name), value)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a definition (absent ones too).
    pub fn delete_definition(&self, kind: &str, name: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(DEFINITIONS)?.remove((kind, name))?;
        tx.commit()?;
        Ok(())
    }

    /// Reserves `count` consecutive ids from the named counter and returns the first. Ids are
    /// never handed out twice, across restarts included.
    pub fn allocate(&self, counter: &str, count: u64) -> Result<u64, StoreError> {
        let tx = self.db.begin_write()?;
        let first = {
            let mut t = tx.open_table(COUNTERS)?;
            let first = t.get(counter)?.map_or(0, |v| v.value());
            t.insert(counter, first + count)?;
            first
        };
        tx.commit()?;
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_offsets_and_counters_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let m = MetaStore::open(&path).unwrap();
            let t = TopicRecord {
                name: "a".into(),
                id: [7; 16],
                partitions: 3,
                configs: BTreeMap::new(),
                created_ms: 1,
            };
            m.put_topic(&t).unwrap();
            m.set_log_start_offset("a", 2, 42).unwrap();
            assert_eq!(m.allocate("pid", 10).unwrap(), 0);
        }
        let m = MetaStore::open(&path).unwrap();
        assert_eq!(m.topics().unwrap()[0].partitions, 3);
        assert_eq!(m.log_start_offset("a", 2).unwrap(), 42);
        assert_eq!(m.allocate("pid", 10).unwrap(), 10);
        m.delete_topic("a").unwrap();
        assert!(m.topics().unwrap().is_empty());
        assert_eq!(m.log_start_offset("a", 2).unwrap(), 0);
    }
}
