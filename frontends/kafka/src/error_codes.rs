//! The mapping from broker errors to Kafka error codes: the only place it is decided.

use kafka_protocol::ResponseError;
use spool_actors::BrokerError;

/// Kafka's code for a broker error.
pub fn code(e: &BrokerError) -> i16 {
    use BrokerError::*;
    let err = match e {
        UnknownTopic(_) | UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
        TopicExists(_) => ResponseError::TopicAlreadyExists,
        InvalidTopic { .. } => ResponseError::InvalidTopicException,
        InvalidPartitions(_) => ResponseError::InvalidPartitions,
        InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        InvalidConfig(_) => ResponseError::InvalidConfig,
        CorruptBatch(_) => ResponseError::CorruptMessage,
        BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        UnknownProducerId(_) => ResponseError::UnknownProducerId,
        PartitionUnavailable { .. } => ResponseError::NotLeaderOrFollower,
        UnknownMemberId(_) => ResponseError::UnknownMemberId,
        IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        RebalanceInProgress(_) => ResponseError::RebalanceInProgress,
        InconsistentGroupProtocol(_) => ResponseError::InconsistentGroupProtocol,
        InvalidSessionTimeout { .. } => ResponseError::InvalidSessionTimeout,
        FencedInstanceId(_) => ResponseError::FencedInstanceId,
        MemberIdRequired(_) => ResponseError::MemberIdRequired,
        NonEmptyGroup(_) => ResponseError::NonEmptyGroup,
        GroupNotFound(_) => ResponseError::GroupIdNotFound,
        GroupUnavailable(_) => ResponseError::CoordinatorNotAvailable,
        GroupSubscribedToTopic { .. } => ResponseError::GroupSubscribedToTopic,
        InvalidGroupId(_) => ResponseError::InvalidGroupId,
        FencedMemberEpoch { .. } => ResponseError::FencedMemberEpoch,
        StaleMemberEpoch { .. } => ResponseError::StaleMemberEpoch,
        UnreleasedInstanceId(_) => ResponseError::UnreleasedInstanceId,
        UnsupportedAssignor(_) => ResponseError::UnsupportedAssignor,
        InvalidRegularExpression { .. } => ResponseError::InvalidRegularExpression,
        InvalidRequest(_) => ResponseError::InvalidRequest,
        // Queue-facade errors never reach the Kafka front end; answer them as invalid requests.
        NoSuchEntity { .. } | PreconditionFailed(_) | ResourceLocked(_) | AccessRefused(_) => {
            ResponseError::InvalidRequest
        }
        // Kafka answers a group of the other type as if it did not exist.
        GroupTypeMismatch { .. } => ResponseError::GroupIdNotFound,
        Storage(_) => ResponseError::KafkaStorageError,
    };
    err.code()
}

/// A partition actor that cannot be reached is restarting: clients retry after refreshing
/// metadata, as they do on a leader change.
pub fn unreachable() -> i16 {
    ResponseError::NotLeaderOrFollower.code()
}
