//! The consumer group protocol of KIP-848 over a raw socket, where each step can be checked:
//! reconciliation (a partition moves only after its owner revoked it), epochs, static members,
//! session expiry, and Kafka's error codes for bad heartbeats.

mod common;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::raw::{call, connect, create_topic};
use common::Spool;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

const ARGS: &[&str] = &["--group-consumer-session-timeout-ms", "1500"];

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A heartbeat's fields; `None` leaves a field unchanged, as clients do between full requests.
#[derive(Clone, Default)]
struct Beat {
    member: &'static str,
    epoch: i32,
    instance: Option<&'static str>,
    topics: Option<Vec<&'static str>>,
    regex: Option<&'static str>,
    assignor: Option<&'static str>,
    owned: Option<Vec<(Uuid, i32)>>,
}

/// A plain heartbeat of a joined member at `epoch`.
fn at(member: &'static str, epoch: i32) -> Beat {
    Beat {
        member,
        epoch,
        ..Beat::default()
    }
}

/// A heartbeat of a joined member reporting the partitions it owns.
fn owning(member: &'static str, epoch: i32, owned: &BTreeSet<(Uuid, i32)>) -> Beat {
    Beat {
        owned: Some(owned.iter().copied().collect()),
        ..at(member, epoch)
    }
}

fn heartbeat(conn: &mut TcpStream, group: &str, b: Beat) -> ConsumerGroupHeartbeatResponse {
    let owned = b.owned.map(|o| {
        let mut by_topic: Vec<TopicPartitions> = Vec::new();
        for (id, p) in o {
            match by_topic.iter_mut().find(|t| t.topic_id == id) {
                Some(t) => t.partitions.push(p),
                None => by_topic.push(
                    TopicPartitions::default()
                        .with_topic_id(id)
                        .with_partitions(vec![p]),
                ),
            }
        }
        by_topic
    });
    call(
        conn,
        ApiKey::ConsumerGroupHeartbeat,
        1,
        &ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(b.member))
            .with_member_epoch(b.epoch)
            .with_instance_id(b.instance.map(s))
            .with_rebalance_timeout_ms(if b.epoch == 0 { 30_000 } else { -1 })
            .with_subscribed_topic_names(
                b.topics
                    .map(|ts| ts.into_iter().map(|t| TopicName(s(t))).collect()),
            )
            .with_subscribed_topic_regex(b.regex.map(s))
            .with_server_assignor(b.assignor.map(s))
            .with_topic_partitions(owned),
    )
}

fn join(
    conn: &mut TcpStream,
    group: &str,
    member: &'static str,
    topic: &'static str,
) -> ConsumerGroupHeartbeatResponse {
    heartbeat(
        conn,
        group,
        Beat {
            member,
            topics: Some(vec![topic]),
            owned: Some(vec![]),
            ..Beat::default()
        },
    )
}

fn assignment(r: &ConsumerGroupHeartbeatResponse) -> Option<BTreeSet<(Uuid, i32)>> {
    r.assignment.as_ref().map(|a| {
        a.topic_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
            .collect()
    })
}

fn ok(r: &ConsumerGroupHeartbeatResponse) {
    assert_eq!(r.error_code, 0, "heartbeat refused: {:?}", r.error_message);
}

fn describe(conn: &mut TcpStream, group: &str) -> consumer_group_describe_response::DescribedGroup {
    let r: ConsumerGroupDescribeResponse = call(
        conn,
        ApiKey::ConsumerGroupDescribe,
        1,
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(group))]),
    );
    r.groups.into_iter().next().unwrap()
}

#[test]
fn a_partition_moves_only_after_its_owner_revoked_it() {
    let spool = Spool::start_with(ARGS);
    let mut c = connect(&spool);
    let t = create_topic(&mut c, "recon", 4);
    let all: BTreeSet<(Uuid, i32)> = (0..4).map(|p| (t, p)).collect();

    // A joins alone and gets everything.
    let a = join(&mut c, "g", "A", "recon");
    ok(&a);
    let e1 = a.member_epoch;
    assert!(e1 > 0);
    assert_eq!(assignment(&a), Some(all.clone()));
    let r = heartbeat(&mut c, "g", owning("A", e1, &all));
    ok(&r);
    assert_eq!(r.member_epoch, e1);
    assert_eq!(
        assignment(&r),
        None,
        "an unchanged assignment is not resent"
    );

    // B joins: the group epoch moves, but A still owns everything, so B gets nothing yet.
    let b = join(&mut c, "g", "B", "recon");
    ok(&b);
    let e2 = b.member_epoch;
    assert!(e2 > e1);
    assert_eq!(assignment(&b), Some(BTreeSet::new()));

    // A is asked to revoke half, keeping its epoch until it has.
    let r = heartbeat(&mut c, "g", owning("A", e1, &all));
    ok(&r);
    assert_eq!(r.member_epoch, e1);
    let kept = assignment(&r).expect("a revocation is sent");
    assert_eq!(kept.len(), 2);
    let moving: BTreeSet<_> = all.difference(&kept).copied().collect();

    // B still gets nothing: A has not confirmed.
    let r = heartbeat(&mut c, "g", at("B", e2));
    ok(&r);
    assert_eq!(assignment(&r), None);

    // A confirms; it moves to the new epoch, and then B gets the released partitions.
    let r = heartbeat(&mut c, "g", owning("A", e1, &kept));
    ok(&r);
    assert_eq!(r.member_epoch, e2);
    let r = heartbeat(&mut c, "g", at("B", e2));
    ok(&r);
    assert_eq!(assignment(&r), Some(moving.clone()));

    let d = describe(&mut c, "g");
    assert_eq!(d.error_code, 0);
    assert_eq!(d.group_state.as_str(), "Stable");
    assert_eq!(d.assignor_name.as_str(), "uniform");
    assert_eq!(d.members.len(), 2);
    assert!(d.members.iter().all(|m| m.member_type == 1));
    let described: BTreeSet<(Uuid, i32)> = d
        .members
        .iter()
        .flat_map(|m| m.assignment.topic_partitions.iter())
        .flat_map(|t| {
            assert_eq!(t.topic_name.as_str(), "recon");
            t.partitions.iter().map(move |p| (t.topic_id, *p))
        })
        .collect();
    assert_eq!(described, all);

    // ListGroups names its type; DescribeGroups, for classic groups only, says it is not one.
    let l: ListGroupsResponse = call(&mut c, ApiKey::ListGroups, 5, &ListGroupsRequest::default());
    let listed = l
        .groups
        .iter()
        .find(|g| g.group_id.as_str() == "g")
        .unwrap();
    assert_eq!(listed.group_type.as_str(), "consumer");
    assert_eq!(listed.protocol_type.as_str(), "consumer");
    let dg: DescribeGroupsResponse = call(
        &mut c,
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
    );
    assert_eq!(
        dg.groups[0].error_code,
        ResponseError::GroupIdNotFound.code()
    );

    // Both leave; the group is empty.
    for m in ["A", "B"] {
        let r = heartbeat(
            &mut c,
            "g",
            Beat {
                member: m,
                epoch: -1,
                ..Beat::default()
            },
        );
        ok(&r);
        assert_eq!(r.member_epoch, -1);
    }
    assert_eq!(describe(&mut c, "g").group_state.as_str(), "Empty");
}

#[test]
fn bad_heartbeats_get_kafkas_error_codes() {
    let spool = Spool::start_with(ARGS);
    let mut c = connect(&spool);
    let t = create_topic(&mut c, "errs", 2);
    let a = join(&mut c, "g", "A", "errs");
    ok(&a);
    let epoch = a.member_epoch;
    let code = |r: ConsumerGroupHeartbeatResponse| r.error_code;

    let cases: Vec<(&str, Beat, ResponseError)> = vec![
        (
            "unknown member",
            Beat {
                member: "nobody",
                epoch: 3,
                ..Beat::default()
            },
            ResponseError::UnknownMemberId,
        ),
        (
            "epoch from the future",
            Beat {
                member: "A",
                epoch: epoch + 7,
                ..Beat::default()
            },
            ResponseError::FencedMemberEpoch,
        ),
        (
            "unknown assignor",
            Beat {
                member: "C",
                topics: Some(vec!["errs"]),
                assignor: Some("sticky"),
                owned: Some(vec![]),
                ..Beat::default()
            },
            ResponseError::UnsupportedAssignor,
        ),
        (
            "bad regex",
            Beat {
                member: "C",
                regex: Some("(["),
                owned: Some(vec![]),
                ..Beat::default()
            },
            ResponseError::InvalidRegularExpression,
        ),
        (
            "empty member id",
            Beat {
                member: "",
                topics: Some(vec!["errs"]),
                owned: Some(vec![]),
                ..Beat::default()
            },
            ResponseError::InvalidRequest,
        ),
        (
            "join without a subscription",
            Beat {
                member: "C",
                owned: Some(vec![]),
                ..Beat::default()
            },
            ResponseError::InvalidRequest,
        ),
        (
            "join claiming partitions",
            Beat {
                member: "C",
                topics: Some(vec!["errs"]),
                owned: Some(vec![(t, 0)]),
                ..Beat::default()
            },
            ResponseError::InvalidRequest,
        ),
        (
            "epoch below -2",
            Beat {
                member: "A",
                epoch: -3,
                ..Beat::default()
            },
            ResponseError::InvalidRequest,
        ),
    ];
    for (what, beat, want) in cases {
        assert_eq!(code(heartbeat(&mut c, "g", beat)), want.code(), "{what}");
    }

    // A classic member cannot join a group whose members use the consumer protocol.
    let j: JoinGroupResponse = call(
        &mut c,
        ApiKey::JoinGroup,
        5,
        &JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default().with_name(s("range"))
            ]),
    );
    assert_eq!(
        j.error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );

    // Commits carry the member epoch: a stale one is refused, the current one accepted, and
    // the group's members are the only ones who can commit.
    let commit = |c: &mut TcpStream, member: &str, epoch: i32| -> i16 {
        let r: OffsetCommitResponse = call(
            c,
            ApiKey::OffsetCommit,
            9,
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s(member))
                .with_generation_id_or_member_epoch(epoch)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("errs")))
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(5)])]),
        );
        r.topics[0].partitions[0].error_code
    };
    assert_eq!(
        commit(&mut c, "A", epoch - 1),
        ResponseError::StaleMemberEpoch.code()
    );
    assert_eq!(
        commit(&mut c, "nobody", epoch),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        commit(&mut c, "", -1),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(commit(&mut c, "A", epoch), 0);

    // None of that disturbed A.
    let r = heartbeat(
        &mut c,
        "g",
        Beat {
            member: "A",
            epoch,
            owned: Some(vec![(t, 0), (t, 1)]),
            ..Beat::default()
        },
    );
    ok(&r);
    assert_eq!(r.member_epoch, epoch);
}

#[test]
fn a_static_member_is_replaced_without_a_rebalance() {
    let spool = Spool::start_with(ARGS);
    let mut c = connect(&spool);
    let t = create_topic(&mut c, "statics", 2);
    let static_join = |c: &mut TcpStream, member: &'static str| {
        heartbeat(
            c,
            "g",
            Beat {
                member,
                instance: Some("i-1"),
                topics: Some(vec!["statics"]),
                owned: Some(vec![]),
                ..Beat::default()
            },
        )
    };
    let first = static_join(&mut c, "S1");
    ok(&first);
    let both: BTreeSet<(Uuid, i32)> = [(t, 0), (t, 1)].into();
    assert_eq!(assignment(&first), Some(both.clone()));
    let group_epoch = describe(&mut c, "g").group_epoch;

    // A second incarnation while the first is still there is refused.
    let dup = static_join(&mut c, "S2");
    assert_eq!(dup.error_code, ResponseError::UnreleasedInstanceId.code());

    // The first leaves for a restart (-2); the second takes its place, epoch and partitions.
    let r = heartbeat(
        &mut c,
        "g",
        Beat {
            member: "S1",
            epoch: -2,
            instance: Some("i-1"),
            ..Beat::default()
        },
    );
    ok(&r);
    let second = static_join(&mut c, "S2");
    ok(&second);
    assert_eq!(second.member_epoch, first.member_epoch);
    assert_eq!(assignment(&second), Some(both));
    let d = describe(&mut c, "g");
    assert_eq!(
        d.group_epoch, group_epoch,
        "the replacement caused a rebalance"
    );
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id.as_str(), "S2");
}

#[test]
fn a_member_that_stops_heartbeating_is_expired_and_its_partitions_move() {
    let spool = Spool::start_with(ARGS);
    let mut c = connect(&spool);
    let t = create_topic(&mut c, "expiry", 2);
    let a = join(&mut c, "g", "A", "expiry");
    ok(&a);
    let mut owned_a = assignment(&a).unwrap();
    let mut epoch_a = a.member_epoch;
    let b = join(&mut c, "g", "B", "expiry");
    ok(&b);
    let epoch_b = b.member_epoch;
    // A gives B its share; B then goes silent.
    let r = heartbeat(&mut c, "g", owning("A", epoch_a, &owned_a));
    owned_a = assignment(&r).unwrap();
    assert_eq!(owned_a.len(), 1);
    let r = heartbeat(&mut c, "g", owning("A", epoch_a, &owned_a));
    ok(&r);
    epoch_a = r.member_epoch;
    let r = heartbeat(&mut c, "g", at("B", epoch_b));
    assert_eq!(assignment(&r).map(|a| a.len()), Some(1));

    // A keeps heartbeating as a client does, every few hundred ms, until B's 1.5 s session
    // runs out and A is given both partitions.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = heartbeat(&mut c, "g", owning("A", epoch_a, &owned_a));
        ok(&r);
        epoch_a = r.member_epoch;
        if let Some(a) = assignment(&r) {
            owned_a = a;
        }
        if owned_a == [(t, 0), (t, 1)].into() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B was never expired\n{}",
            spool.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // B's next heartbeat tells it it is no longer a member.
    let r = heartbeat(&mut c, "g", at("B", epoch_b));
    assert_eq!(r.error_code, ResponseError::UnknownMemberId.code());
}
