use spool_store::StoreError;

/// Errors the broker core reports to front ends, which choose the wire code for each.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    #[error("topic '{topic}' has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("invalid topic name '{name}': {reason}")]
    InvalidTopic { name: String, reason: &'static str },
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor {0}: this cluster has one node")]
    InvalidReplicationFactor(i16),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    #[error("record batch of {size} bytes exceeds max.message.bytes {limit}")]
    BatchTooLarge { size: usize, limit: usize },
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: u64, start: u64, end: u64 },
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id}: epoch {got} is older than {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        got: i16,
        current: i16,
    },
    #[error("producer {0} has no state on this partition")]
    UnknownProducerId(i64),
    #[error("partition {topic}-{partition} is restarting")]
    PartitionUnavailable { topic: String, partition: i32 },
    #[error("unknown member id '{0}'")]
    UnknownMemberId(String),
    #[error("generation {got} is not the group's generation {current}")]
    IllegalGeneration { got: i32, current: i32 },
    #[error("group '{0}' is rebalancing")]
    RebalanceInProgress(String),
    #[error("inconsistent group protocol: {0}")]
    InconsistentGroupProtocol(String),
    #[error("session timeout {got} ms is outside [{min}, {max}] ms")]
    InvalidSessionTimeout { got: i32, min: i32, max: i32 },
    #[error("group instance '{0}' belongs to another member")]
    FencedInstanceId(String),
    #[error("a member id is required: rejoin with '{0}'")]
    MemberIdRequired(String),
    #[error("group '{0}' is not empty")]
    NonEmptyGroup(String),
    #[error("group '{0}' does not exist")]
    GroupNotFound(String),
    #[error("group '{0}' is unavailable (being deleted or restarting)")]
    GroupUnavailable(String),
    #[error("group '{group}' is subscribed to topic '{topic}'")]
    GroupSubscribedToTopic { group: String, topic: String },
    #[error("invalid group id: {0}")]
    InvalidGroupId(String),
    #[error("member epoch {got} is fenced: the member's epoch is {current}; it must rejoin")]
    FencedMemberEpoch { got: i32, current: i32 },
    #[error("member epoch {got} is stale: the member's epoch is {current}")]
    StaleMemberEpoch { got: i32, current: i32 },
    #[error("group instance '{0}' is still used by a member that has not left")]
    UnreleasedInstanceId(String),
    #[error("unsupported server assignor '{0}': this broker offers uniform and range")]
    UnsupportedAssignor(String),
    #[error("invalid regular expression '{pattern}': {reason}")]
    InvalidRegularExpression { pattern: String, reason: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("group '{group}' is a {actual} group, not a {wanted} group")]
    GroupTypeMismatch {
        group: String,
        actual: &'static str,
        wanted: &'static str,
    },
    #[error("no {kind} '{name}'")]
    NoSuchEntity { kind: &'static str, name: String },
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    ResourceLocked(String),
    #[error("{0}")]
    AccessRefused(String),
    #[error("storage error: {0}")]
    Storage(#[source] StoreError),
}

impl From<StoreError> for BrokerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::OffsetOutOfRange { offset, start, end } => {
                BrokerError::OffsetOutOfRange { offset, start, end }
            }
            StoreError::FrameTooLarge { size, limit } => BrokerError::BatchTooLarge { size, limit },
            StoreError::MalformedFrame(m) => BrokerError::CorruptBatch(m),
            e => BrokerError::Storage(e),
        }
    }
}
