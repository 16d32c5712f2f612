//! Incremental fetch sessions (KIP-227), shared by every connection of the listener.
//!
//! A client that fetches many partitions opens a session with a full fetch (session id 0,
//! epoch 0). Its later requests name only the partitions whose fetch position changed, and the
//! broker answers only for the partitions that have something new: records, a moved high
//! watermark or log start offset, or an error. This keeps requests and responses small when
//! most partitions are idle, which is how the Java client and librdkafka fetch.
//!
//! The cache holds at most `max_sessions` sessions. When it is full, the least recently used
//! session is evicted if it has been idle for [`EVICTION_IDLE`]; otherwise the new session is
//! declined (id 0), which tells the client to keep sending full requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

/// How long a session must have been idle before a new one may evict it
/// (`min.incremental.fetch.session.eviction.ms`).
pub(crate) const EVICTION_IDLE: Duration = Duration::from_secs(120);

/// The epoch that asks to close the session (or to fetch without one).
const FINAL_EPOCH: i32 = -1;

/// A partition as the request names it: by topic id from Fetch v13, by name before.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PartitionKey {
    pub topic_id: Uuid,
    pub topic: StrBytes,
    pub partition: i32,
}

/// What to read for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FetchParams {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    pub current_leader_epoch: i32,
}

/// What a partition's last answer in the session told the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LastSent {
    high_watermark: i64,
    log_start_offset: i64,
}

/// A partition of a session.
#[derive(Debug, Clone)]
struct Cached {
    params: FetchParams,
    /// `None` until the partition has been answered once, so a new partition is always sent.
    sent: Option<LastSent>,
}

struct Session {
    next_epoch: i32,
    partitions: IndexMap<PartitionKey, Cached>,
    last_used: Instant,
}

/// How a request uses sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A full request with no session: answer every partition, session id 0.
    Sessionless,
    /// A full request that opened session `id`: answer every partition.
    Full { id: i32 },
    /// An incremental request in session `id`: answer only what changed.
    Incremental { id: i32 },
}

impl Mode {
    /// The session id the response carries.
    pub fn session_id(self) -> i32 {
        match self {
            Mode::Sessionless => 0,
            Mode::Full { id } | Mode::Incremental { id } => id,
        }
    }
}

/// The partitions a request reads, in the order to read them.
pub(crate) struct FetchPlan {
    pub mode: Mode,
    pub partitions: Vec<(PartitionKey, FetchParams)>,
}

/// One partition's answer, as the session needs to know it.
pub(crate) struct Answered {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub has_records: bool,
    pub is_error: bool,
}

/// The fetch sessions of one listener.
pub(crate) struct FetchSessionCache {
    max_sessions: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    sessions: HashMap<i32, Session>,
    next_id: i32,
}

impl FetchSessionCache {
    /// A cache of at most `max_sessions` sessions (0 turns sessions off).
    pub fn new(max_sessions: usize) -> Self {
        // Ids start at a time-derived value so that a restarted broker does not hand out the
        // ids its clients still hold, which would answer them with another session's state.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as i32 & 0x3fff_ffff)
            .unwrap_or(1);
        FetchSessionCache {
            max_sessions,
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                next_id: seed.max(1),
            }),
        }
    }

    /// The cache, locked. A connection task that panicked while holding it may have left a
    /// session half-updated: then every session is dropped (their clients get
    /// FETCH_SESSION_ID_NOT_FOUND and start over with a full fetch) and the cache serves on.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| {
            let mut inner = poisoned.into_inner();
            inner.sessions.clear();
            self.inner.clear_poison();
            inner
        })
    }

    /// Number of open sessions.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Works out what `req` reads, opening, advancing or closing its session. Errors are the
    /// top-level error code of the response (FETCH_SESSION_ID_NOT_FOUND,
    /// INVALID_FETCH_SESSION_EPOCH).
    pub fn begin(&self, req: &FetchRequest) -> Result<FetchPlan, i16> {
        let mut inner = self.lock();
        let now = Instant::now();
        let requested = requested_partitions(req);
        if req.session_epoch == 0 || req.session_epoch == FINAL_EPOCH {
            if req.session_id != 0 {
                inner.sessions.remove(&req.session_id);
            }
            let mode = if req.session_epoch == FINAL_EPOCH {
                Mode::Sessionless
            } else {
                match inner.open(self.max_sessions, now, &requested) {
                    Some(id) => Mode::Full { id },
                    None => Mode::Sessionless,
                }
            };
            return Ok(FetchPlan {
                mode,
                partitions: requested,
            });
        }
        let session = inner
            .sessions
            .get_mut(&req.session_id)
            .ok_or(ResponseError::FetchSessionIdNotFound.code())?;
        if session.next_epoch != req.session_epoch {
            return Err(ResponseError::InvalidFetchSessionEpoch.code());
        }
        session.next_epoch = next_epoch(session.next_epoch);
        session.last_used = now;
        for (key, params) in requested {
            match session.partitions.get_mut(&key) {
                Some(cached) => cached.params = params,
                None => {
                    session
                        .partitions
                        .insert(key, Cached { params, sent: None });
                }
            }
        }
        for forgotten in forgotten_partitions(req) {
            session.partitions.shift_remove(&forgotten);
        }
        let partitions = session
            .partitions
            .iter()
            .map(|(k, c)| (k.clone(), c.params))
            .collect();
        Ok(FetchPlan {
            mode: Mode::Incremental { id: req.session_id },
            partitions,
        })
    }

    /// Records what was answered and says, per partition of the plan, whether it goes into the
    /// response. Partitions that returned records move to the back of the session, so that a
    /// response byte limit does not starve the ones behind them.
    pub fn finish(&self, plan: &FetchPlan, answers: &[Answered]) -> Vec<bool> {
        let id = match plan.mode {
            Mode::Sessionless => return vec![true; answers.len()],
            Mode::Full { id } | Mode::Incremental { id } => id,
        };
        let full = matches!(plan.mode, Mode::Full { .. });
        let mut inner = self.lock();
        let Some(session) = inner.sessions.get_mut(&id) else {
            // Closed meanwhile: answer as a full response would.
            return vec![true; answers.len()];
        };
        let mut include = Vec::with_capacity(answers.len());
        let mut rotate = Vec::new();
        for ((key, _), a) in plan.partitions.iter().zip(answers) {
            let Some(cached) = session.partitions.get_mut(key) else {
                include.push(full);
                continue;
            };
            let now_sent = LastSent {
                high_watermark: a.high_watermark,
                log_start_offset: a.log_start_offset,
            };
            let changed = cached.sent != Some(now_sent);
            // After an error the partition is sent again once it recovers, as in Kafka.
            cached.sent = if a.is_error { None } else { Some(now_sent) };
            include.push(full || a.has_records || a.is_error || changed);
            if a.has_records {
                rotate.push(key.clone());
            }
        }
        for key in rotate {
            if let Some(cached) = session.partitions.shift_remove(&key) {
                session.partitions.insert(key, cached);
            }
        }
        include
    }
}

impl Inner {
    fn open(
        &mut self,
        max_sessions: usize,
        now: Instant,
        requested: &[(PartitionKey, FetchParams)],
    ) -> Option<i32> {
        if max_sessions == 0 || requested.is_empty() {
            return None;
        }
        if self.sessions.len() >= max_sessions {
            let (&lru, session) = self.sessions.iter().min_by_key(|(_, s)| s.last_used)?;
            if now.duration_since(session.last_used) < EVICTION_IDLE {
                return None;
            }
            self.sessions.remove(&lru);
        }
        let id = loop {
            let id = self.next_id;
            self.next_id = if self.next_id == i32::MAX {
                1
            } else {
                self.next_id + 1
            };
            if !self.sessions.contains_key(&id) {
                break id;
            }
        };
        let partitions = requested
            .iter()
            .map(|(k, p)| {
                (
                    k.clone(),
                    Cached {
                        params: *p,
                        sent: None,
                    },
                )
            })
            .collect();
        self.sessions.insert(
            id,
            Session {
                next_epoch: 1,
                partitions,
                last_used: now,
            },
        );
        Some(id)
    }
}

fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

fn requested_partitions(req: &FetchRequest) -> Vec<(PartitionKey, FetchParams)> {
    req.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    PartitionKey {
                        topic_id: t.topic_id,
                        topic: t.topic.0.clone(),
                        partition: p.partition,
                    },
                    FetchParams {
                        fetch_offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes,
                        current_leader_epoch: p.current_leader_epoch,
                    },
                )
            })
        })
        .collect()
}

fn forgotten_partitions(req: &FetchRequest) -> Vec<PartitionKey> {
    req.forgotten_topics_data
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|&partition| PartitionKey {
                topic_id: t.topic_id,
                topic: t.topic.0.clone(),
                partition,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
    use kafka_protocol::messages::TopicName;

    fn request(id: i32, epoch: i32, parts: &[(i32, i64)]) -> FetchRequest {
        FetchRequest::default()
            .with_session_id(id)
            .with_session_epoch(epoch)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(
                    parts
                        .iter()
                        .map(|&(p, o)| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(o)
                        })
                        .collect(),
                )])
    }

    fn answer(hw: i64, records: bool) -> Answered {
        Answered {
            high_watermark: hw,
            log_start_offset: 0,
            has_records: records,
            is_error: false,
        }
    }

    #[test]
    fn a_session_answers_only_what_changed() {
        let cache = FetchSessionCache::new(10);
        let plan = cache.begin(&request(0, 0, &[(0, 0), (1, 0)])).unwrap();
        let Mode::Full { id } = plan.mode else {
            panic!("no session opened: {:?}", plan.mode)
        };
        assert_eq!(
            cache.finish(&plan, &[answer(5, true), answer(0, false)]),
            [true, true]
        );

        // Partition 0 moved on; partition 1 is idle and not named.
        let plan = cache.begin(&request(id, 1, &[(0, 5)])).unwrap();
        assert_eq!(plan.mode, Mode::Incremental { id });
        let offsets: Vec<_> = plan
            .partitions
            .iter()
            .map(|(k, p)| (k.partition, p.fetch_offset))
            .collect();
        // Partition 0 returned records, so it went to the back.
        assert_eq!(offsets, [(1, 0), (0, 5)]);
        assert_eq!(
            cache.finish(&plan, &[answer(0, false), answer(5, false)]),
            [false, false]
        );

        // The high watermark of partition 1 moves: it is sent.
        let plan = cache.begin(&request(id, 2, &[])).unwrap();
        assert_eq!(
            cache.finish(&plan, &[answer(3, false), answer(5, false)]),
            [true, false]
        );
    }

    #[test]
    fn a_panic_while_the_cache_is_locked_drops_the_sessions_not_the_cache() {
        let cache = std::sync::Arc::new(FetchSessionCache::new(10));
        let plan = cache.begin(&request(0, 0, &[(0, 0)])).unwrap();
        let Mode::Full { id } = plan.mode else {
            panic!("no session opened")
        };
        let held = cache.clone();
        let crashed = std::thread::spawn(move || {
            let _guard = held.lock();
            panic!("a connection task fails while it holds the cache");
        })
        .join();
        assert!(crashed.is_err());
        // The session is gone: its client is told so and starts over; new sessions open.
        assert_eq!(
            cache.begin(&request(id, 1, &[(0, 0)])).err(),
            Some(ResponseError::FetchSessionIdNotFound.code())
        );
        assert!(matches!(
            cache.begin(&request(0, 0, &[(0, 0)])).unwrap().mode,
            Mode::Full { .. }
        ));
    }

    #[test]
    fn wrong_epochs_and_unknown_ids_are_refused() {
        let cache = FetchSessionCache::new(10);
        let plan = cache.begin(&request(0, 0, &[(0, 0)])).unwrap();
        let id = plan.mode.session_id();
        assert_eq!(
            cache.begin(&request(id, 5, &[])).err(),
            Some(ResponseError::InvalidFetchSessionEpoch.code())
        );
        assert_eq!(
            cache.begin(&request(id + 1, 1, &[])).err(),
            Some(ResponseError::FetchSessionIdNotFound.code())
        );
        // The final epoch closes the session and fetches without one.
        let plan = cache.begin(&request(id, FINAL_EPOCH, &[(0, 0)])).unwrap();
        assert_eq!(plan.mode, Mode::Sessionless);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn forgotten_partitions_leave_the_session() {
        let cache = FetchSessionCache::new(10);
        let plan = cache.begin(&request(0, 0, &[(0, 0), (1, 0)])).unwrap();
        let id = plan.mode.session_id();
        let mut req = request(id, 1, &[]);
        req.forgotten_topics_data = vec![ForgottenTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![0])];
        let plan = cache.begin(&req).unwrap();
        let parts: Vec<_> = plan.partitions.iter().map(|(k, _)| k.partition).collect();
        assert_eq!(parts, [1]);
    }

    #[test]
    fn a_full_cache_declines_new_sessions_while_the_old_ones_are_busy() {
        let cache = FetchSessionCache::new(1);
        assert!(matches!(
            cache.begin(&request(0, 0, &[(0, 0)])).unwrap().mode,
            Mode::Full { .. }
        ));
        assert_eq!(
            cache.begin(&request(0, 0, &[(0, 0)])).unwrap().mode,
            Mode::Sessionless
        );
    }
}
