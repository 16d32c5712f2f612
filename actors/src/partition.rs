//! The partition actor: one replica of one partition, and the only writer of its log.
//!
//! Appends are serialized here and land in the OS page cache at once; when the flush policy
//! asks for durability before acknowledgement, the acknowledgement waits for an fsync that runs
//! on a blocking thread and covers every append made before it started (group commit). Reads are
//! answered from the page cache; fetches that find nothing new are parked until data arrives.

use spool_metrics::live;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use spool_store::{Log, LogConfig, MetaStore, SyncJob};
use tokio::sync::oneshot;
use tracing::{error, info};

use crate::partition_offsets::LogStats;
use crate::producer_state::{ProducerStates, SequenceCheck};
use crate::record_batch::{self, BatchHeader, LEADER_EPOCH_AT};
use crate::supervision::EndNotice;
use crate::BrokerError;

const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(100);
/// A partition with a `flush.ms` policy also starts its background fsync once this much is
/// unsynced, so that a busy partition's periodic fsync never has a whole interval of writes to
/// push at once. At 200 MB/s over 16 partitions, one fsync a second each stalled appends
/// behind the writeback (end-to-end p99 18 to 37 ms against 4.5 ms with no fsync at all).
const SYNC_AHEAD_BYTES: u64 = 4 * 1024 * 1024;
const RETENTION_EVERY: Duration = Duration::from_secs(30);

/// What this replica does for its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaRole {
    /// Accepts appends from clients and serves reads.
    Leader { epoch: i32 },
    /// Follows `leader` (when replication arrives); refuses client appends.
    Follower { leader: i32, epoch: i32 },
}

/// A batch whose header and checksum were verified, ready to append.
pub struct ValidatedBatch {
    bytes: Bytes,
    header: BatchHeader,
}

impl ValidatedBatch {
    /// Verifies `bytes` as one batch of the broker's format.
    pub fn new(bytes: Bytes) -> Result<ValidatedBatch, BrokerError> {
        let header = record_batch::validate(&bytes).map_err(BrokerError::CorruptBatch)?;
        Ok(ValidatedBatch { bytes, header })
    }

    /// A batch the broker itself just encoded (queue publishes, dead letters): checked like
    /// [`Self::new`] but for the CRC, which its encoder computed over these same bytes.
    pub fn encoded_here(bytes: Bytes) -> Result<ValidatedBatch, BrokerError> {
        let header = record_batch::validate_own(&bytes).map_err(BrokerError::CorruptBatch)?;
        Ok(ValidatedBatch { bytes, header })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch as it will be stored (before the broker stamps its offset).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Appends batches; answers once they are acknowledged under the flush policy.
#[derive(Message)]
#[rtype(result = "Result<AppendResult, BrokerError>")]
pub struct AppendBatches {
    pub batches: Vec<ValidatedBatch>,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: u64,
    pub log_start_offset: u64,
    /// The time stamped on the batches (ms since the epoch) when the log keeps append times
    /// (`message.timestamp.type=LogAppendTime`).
    pub log_append_time: Option<i64>,
}

/// Reads whole batches from the one containing `offset`, at most `max_bytes` (but at least one
/// batch when any exists).
#[derive(Message)]
#[rtype(result = "Result<ReadResult, BrokerError>")]
pub struct ReadRecords {
    pub offset: u64,
    pub max_bytes: usize,
}

/// Stored batches and the partition's offsets at the time of the read.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub records: Bytes,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// Resolves once the log holds an offset at or beyond `offset` (a parked long-poll fetch).
/// The caller bounds the wait with its own timeout.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AwaitRecords {
    pub offset: u64,
}

/// Which offset ListOffsets wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    Earliest,
    Latest,
    MaxTimestamp,
    /// The first record with a timestamp at or after this (ms).
    Timestamp(i64),
}

/// An answer to [`QueryOffset`].
#[derive(Debug, Clone)]
pub enum OffsetAnswer {
    /// The offset (and the timestamp, when the query was by time).
    Offset { offset: u64, timestamp: i64 },
    /// The batch holding the answer: the caller finds the exact record inside it.
    InBatch(Bytes),
    /// No record matches (a timestamp after every record).
    NotFound,
}

impl OffsetAnswer {
    /// The `(offset, timestamp)` the query asked for, finding the record inside a returned
    /// batch: the first at or after the timestamp, or the one carrying the maximum timestamp.
    pub fn resolve(self, query: OffsetQuery) -> Option<(i64, i64)> {
        let mut batch = match self {
            OffsetAnswer::Offset { offset, timestamp } => return Some((offset as i64, timestamp)),
            OffsetAnswer::NotFound => return None,
            OffsetAnswer::InBatch(batch) => batch,
        };
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch).ok()?;
        match query {
            OffsetQuery::Timestamp(ts) => set
                .records
                .iter()
                .find(|r| r.timestamp >= ts)
                .map(|r| (r.offset, r.timestamp)),
            _ => set
                .records
                .iter()
                .fold(None, |best: Option<(i64, i64)>, r| match best {
                    Some((_, t)) if t >= r.timestamp => best,
                    _ => Some((r.offset, r.timestamp)),
                }),
        }
    }
}

/// Looks an offset up by position or time.
#[derive(Message)]
#[rtype(result = "Result<OffsetAnswer, BrokerError>")]
pub struct QueryOffset {
    pub query: OffsetQuery,
}

/// Moves the log start offset to `offset` (`None`: the high watermark), as DeleteRecords does.
#[derive(Message)]
#[rtype(result = "Result<u64, BrokerError>")]
pub struct DeleteRecordsBefore {
    pub offset: Option<u64>,
}

/// Reports the log's offsets and size.
#[derive(Message)]
#[rtype(result = "LogStatus")]
pub struct DescribeLog;

/// A partition's offsets and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStatus {
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub flushed_offset: u64,
    pub size_bytes: u64,
    pub segments: usize,
    pub leader_epoch: i32,
}

/// Applies a changed topic config.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateLogConfig {
    pub config: LogConfig,
}

/// Flushes and stops the actor; with `delete`, removes the log from disk.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct CloseLog {
    pub delete: bool,
}

pub use crate::faults::InjectPanic;

/// One replica of one partition. See the module docs.
pub struct PartitionActor {
    topic: Arc<str>,
    partition: i32,
    role: ReplicaRole,
    log: Option<Log>,
    meta: Arc<MetaStore>,
    producers: ProducerStates,
    data_waiters: Vec<oneshot::Sender<()>>,
    sync_waiters: Vec<(u64, oneshot::Sender<Result<(), String>>)>,
    sync_in_flight: bool,
    last_sync: Instant,
    last_retention: Instant,
    stats: Arc<LogStats>,
    /// Tells the registry when this actor ends; last, so the log is closed by then.
    end_notice: Option<EndNotice>,
}

impl PartitionActor {
    /// Wraps a recovered log, rebuilding idempotent-producer state from its active segment.
    pub fn new(
        topic: Arc<str>,
        partition: i32,
        role: ReplicaRole,
        log: Log,
        meta: Arc<MetaStore>,
        stats: Arc<LogStats>,
    ) -> Result<PartitionActor, BrokerError> {
        stats.publish(&log);
        let mut producers = ProducerStates::default();
        for (base, info) in log.tail_frames()? {
            if let Some(w) = info.writer {
                producers.record(&w, info.last_offset_delta, base);
            }
        }
        Ok(PartitionActor {
            topic,
            partition,
            role,
            log: Some(log),
            meta,
            producers,
            data_waiters: Vec::new(),
            sync_waiters: Vec::new(),
            sync_in_flight: false,
            last_sync: Instant::now(),
            last_retention: Instant::now(),
            stats,
            end_notice: None,
        })
    }

    /// Has `notice` sent to the supervisor when this actor ends.
    pub fn with_end_notice(mut self, notice: EndNotice) -> PartitionActor {
        self.end_notice = Some(notice);
        self
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("log present until close")
    }

    fn log_mut(&mut self) -> &mut Log {
        self.log.as_mut().expect("log present until close")
    }

    fn leader_epoch(&self) -> i32 {
        match self.role {
            ReplicaRole::Leader { epoch } | ReplicaRole::Follower { epoch, .. } => epoch,
        }
    }

    /// The synchronous part of an append: sequence checks, then writes.
    fn append(
        &mut self,
        batches: Vec<ValidatedBatch>,
    ) -> Result<(AppendResult, bool), BrokerError> {
        let ReplicaRole::Leader { epoch } = self.role else {
            return Err(BrokerError::PartitionUnavailable {
                topic: self.topic.to_string(),
                partition: self.partition,
            });
        };
        let mut first_base = None;
        let mut needs_sync = false;
        let append_time = self
            .log()
            .config()
            .log_append_time
            .then(|| spool_now_ms() as i64);
        for batch in batches {
            let mut info = batch.header.info;
            if let Some(w) = &info.writer {
                if let SequenceCheck::Duplicate { base_offset } =
                    self.producers.check(w, info.last_offset_delta)?
                {
                    first_base.get_or_insert(base_offset);
                    continue;
                }
            }
            // The leader epoch (and the append time) is stamped as the batch is written; the
            // records are not copied.
            let b = &batch.bytes;
            let epoch = epoch.to_be_bytes();
            let out = match append_time {
                None => {
                    let parts = [&b[..LEADER_EPOCH_AT], &epoch[..], &b[LEADER_EPOCH_AT + 4..]];
                    self.log_mut().append(&parts, &info)?
                }
                Some(now) => {
                    info.max_timestamp = now;
                    let head = record_batch::stamp_log_append_time(b, now);
                    let parts = [
                        &b[..LEADER_EPOCH_AT],
                        &epoch[..],
                        &head[..],
                        &b[record_batch::STAMPED_HEAD_END..],
                    ];
                    self.log_mut().append(&parts, &info)?
                }
            };
            if let Some(w) = &info.writer {
                self.producers
                    .record(w, info.last_offset_delta, out.base_offset);
            }
            live::appended(info.last_offset_delta as u64 + 1, b.len());
            needs_sync |= out.needs_sync;
            first_base.get_or_insert(out.base_offset);
        }
        self.stats.publish(self.log());
        for w in self.data_waiters.drain(..) {
            let _ = w.send(());
        }
        Ok((
            AppendResult {
                base_offset: first_base.unwrap_or_else(|| self.log().next_offset()),
                log_start_offset: self.log().log_start_offset(),
                log_append_time: append_time,
            },
            needs_sync,
        ))
    }

    /// Starts an fsync on a blocking thread if none is running.
    fn start_sync(&mut self, ctx: &mut Context<Self>) {
        if self.sync_in_flight {
            return;
        }
        if self.log.is_none() {
            return;
        }
        let job = match self.log_mut().prepare_sync() {
            Ok(job) => job,
            Err(e) => return self.fail_sync_waiters(e.to_string()),
        };
        self.sync_in_flight = true;
        let fut = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let r = job.run();
            live::fsync(started.elapsed());
            (job, r)
        });
        ctx.spawn(
            fut.into_actor(self)
                .map(|res, act, ctx| act.finish_sync(res, ctx)),
        );
    }

    fn finish_sync(
        &mut self,
        res: Result<(SyncJob, std::io::Result<()>), tokio::task::JoinError>,
        ctx: &mut Context<Self>,
    ) {
        self.sync_in_flight = false;
        self.last_sync = Instant::now();
        let job = match res {
            Ok((job, Ok(()))) => job,
            Ok((_, Err(e))) => return self.fail_sync_waiters(format!("fsync failed: {e}")),
            Err(e) => return self.fail_sync_waiters(format!("fsync task failed: {e}")),
        };
        if let Err(e) = self.log_mut().complete_sync(&job) {
            error!(topic = %self.topic, partition = self.partition, error = %e, "recording a sync failed");
        }
        let upto = job.upto_offset;
        let (done, pending): (Vec<_>, Vec<_>) = self
            .sync_waiters
            .drain(..)
            .partition(|(needed, _)| *needed <= upto);
        self.sync_waiters = pending;
        for (_, w) in done {
            let _ = w.send(Ok(()));
        }
        if !self.sync_waiters.is_empty() {
            self.start_sync(ctx);
        }
    }

    fn fail_sync_waiters(&mut self, reason: String) {
        error!(topic = %self.topic, partition = self.partition, %reason, "flush failed");
        for (_, w) in self.sync_waiters.drain(..) {
            let _ = w.send(Err(reason.clone()));
        }
    }

    fn housekeeping(&mut self, ctx: &mut Context<Self>) {
        if self.log.is_none() {
            return;
        }
        self.data_waiters.retain(|w| !w.is_closed());
        let log = self.log();
        let flush_due = log.is_dirty()
            && log
                .config()
                .flush_ms
                .is_some_and(|ms| self.last_sync.elapsed() >= Duration::from_millis(ms));
        if flush_due {
            self.start_sync(ctx);
        }
        if self.last_retention.elapsed() >= RETENTION_EVERY {
            self.last_retention = Instant::now();
            let log = self.log_mut();
            if let Err(e) = log.roll_if_old() {
                error!(error = %e, "segment roll failed");
            }
            let deleted = log.apply_retention(spool_now_ms());
            let start = log.log_start_offset();
            self.stats.publish(self.log());
            if deleted > 0 {
                info!(topic = %self.topic, partition = self.partition, deleted, log_start_offset = start, "retention deleted segments");
            }
        }
    }
}

fn spool_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(HOUSEKEEPING_EVERY, |act, ctx| act.housekeeping(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(log) = self.log.as_mut() {
            if let Err(e) = log.flush() {
                error!(topic = %self.topic, partition = self.partition, error = %e, "final flush failed");
            }
        }
    }
}

impl Handler<AppendBatches> for PartitionActor {
    type Result = ResponseFuture<Result<AppendResult, BrokerError>>;

    fn handle(&mut self, msg: AppendBatches, ctx: &mut Context<Self>) -> Self::Result {
        let appended = self.append(msg.batches);
        let sync_ahead = self.log.as_ref().is_some_and(|log| {
            log.config().flush_ms.is_some() && log.unflushed_bytes() >= SYNC_AHEAD_BYTES
        });
        if sync_ahead {
            self.start_sync(ctx);
        }
        match appended {
            Err(e) => Box::pin(async move { Err(e) }),
            Ok((result, false)) => Box::pin(async move { Ok(result) }),
            Ok((result, true)) => {
                let (tx, rx) = oneshot::channel();
                self.sync_waiters.push((self.log().next_offset(), tx));
                self.start_sync(ctx);
                let (topic, partition) = (self.topic.to_string(), self.partition);
                Box::pin(async move {
                    match rx.await {
                        Ok(Ok(())) => Ok(result),
                        Ok(Err(reason)) => Err(BrokerError::Storage(spool_store::StoreError::Io {
                            path: "fsync".into(),
                            source: std::io::Error::other(reason),
                        })),
                        // The actor died before the sync: the append is not acknowledged.
                        Err(_) => Err(BrokerError::PartitionUnavailable { topic, partition }),
                    }
                })
            }
        }
    }
}

/// An append queued with [`queue_append`]: its result goes to `reply`.
#[derive(Message)]
#[rtype(result = "()")]
struct QueuedAppend {
    batches: Vec<ValidatedBatch>,
    reply: oneshot::Sender<Result<AppendResult, BrokerError>>,
}

impl Handler<QueuedAppend> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: QueuedAppend, ctx: &mut Context<Self>) {
        let answer = <Self as Handler<AppendBatches>>::handle(
            self,
            AppendBatches {
                batches: msg.batches,
            },
            ctx,
        );
        actix::spawn(async move {
            let _ = msg.reply.send(answer.await);
        });
    }
}

/// Queues an append on the partition now, even when its mailbox is full, so appends queued one
/// after another are applied in that order (`Addr::send` waits for room, and a later append
/// could take it first). The future resolves with the append's result.
pub fn queue_append(
    addr: &Addr<PartitionActor>,
    batches: Vec<ValidatedBatch>,
) -> impl std::future::Future<Output = Option<Result<AppendResult, BrokerError>>> {
    let (reply, rx) = oneshot::channel();
    addr.do_send(QueuedAppend { batches, reply });
    // `None`: the actor stopped before answering.
    async move { rx.await.ok() }
}

impl Handler<ReadRecords> for PartitionActor {
    type Result = Result<ReadResult, BrokerError>;

    fn handle(&mut self, msg: ReadRecords, _ctx: &mut Context<Self>) -> Self::Result {
        let log = self.log();
        let records = log.read(msg.offset, msg.max_bytes)?;
        Ok(ReadResult {
            records,
            high_watermark: log.next_offset(),
            log_start_offset: log.log_start_offset(),
        })
    }
}

impl Handler<AwaitRecords> for PartitionActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: AwaitRecords, _ctx: &mut Context<Self>) -> Self::Result {
        if self.log().next_offset() > msg.offset {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.data_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<QueryOffset> for PartitionActor {
    type Result = Result<OffsetAnswer, BrokerError>;

    fn handle(&mut self, msg: QueryOffset, _ctx: &mut Context<Self>) -> Self::Result {
        let log = self.log();
        Ok(match msg.query {
            OffsetQuery::Earliest => OffsetAnswer::Offset {
                offset: log.log_start_offset(),
                timestamp: -1,
            },
            OffsetQuery::Latest => OffsetAnswer::Offset {
                offset: log.next_offset(),
                timestamp: -1,
            },
            OffsetQuery::MaxTimestamp => match log.max_timestamp() {
                Some((_, base)) if base >= log.log_start_offset() => {
                    let records = log.read(base, 1)?;
                    OffsetAnswer::InBatch(records)
                }
                _ => OffsetAnswer::NotFound,
            },
            OffsetQuery::Timestamp(ts) => match log.frame_for_timestamp(ts)? {
                Some(batch) => OffsetAnswer::InBatch(batch),
                None => OffsetAnswer::NotFound,
            },
        })
    }
}

impl Handler<DeleteRecordsBefore> for PartitionActor {
    type Result = Result<u64, BrokerError>;

    fn handle(&mut self, msg: DeleteRecordsBefore, _ctx: &mut Context<Self>) -> Self::Result {
        let target = msg.offset.unwrap_or_else(|| self.log().next_offset());
        let start = self.log_mut().delete_records_before(target)?;
        self.stats.publish(self.log());
        self.meta
            .set_log_start_offset(&self.topic, self.partition as u32, start)?;
        info!(topic = %self.topic, partition = self.partition, log_start_offset = start, "records deleted");
        Ok(start)
    }
}

impl Handler<DescribeLog> for PartitionActor {
    type Result = MessageResult<DescribeLog>;

    fn handle(&mut self, _msg: DescribeLog, _ctx: &mut Context<Self>) -> Self::Result {
        let log = self.log();
        MessageResult(LogStatus {
            log_start_offset: log.log_start_offset(),
            high_watermark: log.next_offset(),
            flushed_offset: log.flushed_offset(),
            size_bytes: log.size_bytes(),
            segments: log.segment_count(),
            leader_epoch: self.leader_epoch(),
        })
    }
}

impl Handler<UpdateLogConfig> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateLogConfig, _ctx: &mut Context<Self>) {
        self.log_mut().set_config(msg.config);
    }
}

impl Handler<CloseLog> for PartitionActor {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: CloseLog, ctx: &mut Context<Self>) -> Self::Result {
        ctx.stop();
        // A second close (a delete racing the shutdown's) finds nothing left to do.
        let Some(log) = self.log.take() else {
            return Ok(());
        };
        if msg.delete {
            log.delete()?;
        } else {
            let mut log = log;
            log.flush()?;
        }
        Ok(())
    }
}

#[cfg(debug_assertions)]
impl Handler<InjectPanic> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: InjectPanic, _ctx: &mut Context<Self>) {
        msg.strike(format_args!("{}-{}", self.topic, self.partition));
    }
}
