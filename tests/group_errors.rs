//! Consumer group bad input and faults over a raw socket: each gets Kafka's error code, the group
//! converges, and no committed offset is lost or moved backwards. Also: every served version of
//! every group API answers with a decodable response.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::{call, connect, create_topic};
use common::Spool;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

const ARGS: &[&str] = &[
    "--group-initial-rebalance-delay-ms",
    "0",
    "--group-min-session-timeout-ms",
    "100",
];

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

fn join_request(
    group: &str,
    member: &str,
    protocol_type: &str,
    session_ms: i32,
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(session_ms)
        .with_protocol_type(s(protocol_type))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"meta"))])
}

/// Joins with JoinGroup v5 (through MEMBER_ID_REQUIRED), returning the final response.
fn join(conn: &mut TcpStream, group: &str, member: &str, session_ms: i32) -> JoinGroupResponse {
    let r: JoinGroupResponse = call(
        conn,
        ApiKey::JoinGroup,
        5,
        &join_request(group, member, "consumer", session_ms),
    );
    if r.error_code == code(ResponseError::MemberIdRequired) {
        return join(conn, group, &r.member_id, session_ms);
    }
    r
}

fn sync(
    conn: &mut TcpStream,
    group: &str,
    member: &str,
    generation: i32,
    assign: bool,
) -> SyncGroupResponse {
    let assignments = if assign {
        vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(member))
            .with_assignment(Bytes::from_static(b"all of it"))]
    } else {
        vec![]
    };
    call(
        conn,
        ApiKey::SyncGroup,
        3,
        &SyncGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_generation_id(generation)
            .with_assignments(assignments),
    )
}

fn heartbeat(conn: &mut TcpStream, group: &str, member: &str, generation: i32) -> i16 {
    let r: HeartbeatResponse = call(
        conn,
        ApiKey::Heartbeat,
        3,
        &HeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_generation_id(generation),
    );
    r.error_code
}

fn commit(
    conn: &mut TcpStream,
    group: &str,
    member: &str,
    generation: i32,
    (topic, partition): (&str, i32),
    offset: i64,
    metadata: &str,
) -> i16 {
    let r: OffsetCommitResponse = call(
        conn,
        ApiKey::OffsetCommit,
        8,
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_generation_id_or_member_epoch(generation)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(offset)
                    .with_committed_metadata(Some(s(metadata)))])]),
    );
    r.topics[0].partitions[0].error_code
}

fn committed(conn: &mut TcpStream, group: &str, topic: &str, partition: i32) -> (i64, String) {
    let r: OffsetFetchResponse = call(
        conn,
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partition_indexes(vec![partition])])),
    );
    assert_eq!(r.error_code, 0);
    let p = &r.topics[0].partitions[0];
    (
        p.committed_offset,
        p.metadata.as_ref().map_or(String::new(), |m| m.to_string()),
    )
}

fn group_state(conn: &mut TcpStream, group: &str) -> (String, usize) {
    let r: DescribeGroupsResponse = call(
        conn,
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]),
    );
    (
        r.groups[0].group_state.to_string(),
        r.groups[0].members.len(),
    )
}

fn wait_state(conn: &mut TcpStream, group: &str, state: &str, spool: &Spool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while group_state(conn, group).0 != state {
        assert!(
            Instant::now() < deadline,
            "group never {state}\n{}",
            spool.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_group_input_gets_kafka_error_codes_and_offsets_never_move_back() {
    let spool = Spool::start_with(ARGS);
    let mut c = connect(&spool);
    create_topic(&mut c, "t", 2);
    let g = "errors";

    assert_eq!(
        heartbeat(&mut c, g, "nobody", 1),
        code(ResponseError::UnknownMemberId)
    );
    let r: JoinGroupResponse = call(
        &mut c,
        ApiKey::JoinGroup,
        5,
        &join_request(g, "", "consumer", 50),
    );
    assert_eq!(r.error_code, code(ResponseError::InvalidSessionTimeout));
    let r: JoinGroupResponse = call(
        &mut c,
        ApiKey::JoinGroup,
        5,
        &join_request(g, "bogus", "consumer", 10_000),
    );
    assert_eq!(r.error_code, code(ResponseError::UnknownMemberId));

    let first = join(&mut c, g, "", 10_000);
    assert_eq!(first.error_code, 0);
    assert_eq!(
        (first.generation_id, first.leader.as_str()),
        (1, first.member_id.as_str())
    );
    assert_eq!(first.members.len(), 1, "the leader gets the member list");
    let me = first.member_id.to_string();

    let r: JoinGroupResponse = call(
        &mut c,
        ApiKey::JoinGroup,
        5,
        &join_request(g, "", "connect", 10_000),
    );
    assert_eq!(r.error_code, code(ResponseError::InconsistentGroupProtocol));
    assert_eq!(
        sync(&mut c, g, &me, 0, true).error_code,
        code(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        sync(&mut c, g, "bogus", 1, true).error_code,
        code(ResponseError::UnknownMemberId)
    );
    let synced = sync(&mut c, g, &me, 1, true);
    assert_eq!(
        (synced.error_code, &synced.assignment[..]),
        (0, &b"all of it"[..])
    );
    assert_eq!(heartbeat(&mut c, g, &me, 1), 0);
    assert_eq!(
        heartbeat(&mut c, g, &me, 0),
        code(ResponseError::IllegalGeneration)
    );

    assert_eq!(commit(&mut c, g, &me, 1, ("t", 0), 42, "kept"), 0);
    assert_eq!(
        commit(&mut c, g, &me, 0, ("t", 0), 7, "stale"),
        code(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        commit(&mut c, g, "bogus", 1, ("t", 0), 7, "x"),
        code(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        commit(&mut c, g, &me, 1, ("t", 9), 7, "x"),
        code(ResponseError::UnknownTopicOrPartition)
    );
    assert_eq!(
        commit(&mut c, g, &me, 1, ("nope", 0), 7, "x"),
        code(ResponseError::UnknownTopicOrPartition)
    );
    let big = "m".repeat(5000);
    assert_eq!(
        commit(&mut c, g, &me, 1, ("t", 0), 7, &big),
        code(ResponseError::OffsetMetadataTooLarge)
    );
    // Simple (generation -1) commits are refused while the group has members.
    assert_eq!(
        commit(&mut c, g, "", -1, ("t", 0), 7, "admin"),
        code(ResponseError::UnknownMemberId)
    );
    assert_eq!(committed(&mut c, g, "t", 0), (42, "kept".to_string()));

    let r: DeleteGroupsResponse = call(
        &mut c,
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(g))]),
    );
    assert_eq!(r.results[0].error_code, code(ResponseError::NonEmptyGroup));
    assert_eq!(group_state(&mut c, "never-seen").0, "Dead");

    // A member that stops heartbeating is expired; its commits stay.
    let quiet = join(&mut c, "quiet", "", 200);
    assert_eq!(
        sync(&mut c, "quiet", &quiet.member_id, 1, true).error_code,
        0
    );
    assert_eq!(
        commit(&mut c, "quiet", &quiet.member_id, 1, ("t", 1), 5, ""),
        0
    );
    wait_state(&mut c, "quiet", "Empty", &spool);
    assert_eq!(
        heartbeat(&mut c, "quiet", &quiet.member_id, 1),
        code(ResponseError::UnknownMemberId)
    );
    assert_eq!(committed(&mut c, "quiet", "t", 1).0, 5);
    // Empty now: simple commits and deletion work.
    assert_eq!(commit(&mut c, "quiet", "", -1, ("t", 1), 6, "admin"), 0);
    let r: DeleteGroupsResponse = call(
        &mut c,
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("quiet"))]),
    );
    assert_eq!(r.results[0].error_code, 0);
    assert_eq!(committed(&mut c, "quiet", "t", 1).0, -1);
}

#[test]
fn a_client_that_disconnects_mid_rebalance_is_expired_and_the_group_converges() {
    let spool = Spool::start_with(ARGS);
    let mut a = connect(&spool);
    let g = "converge";
    let first = join(&mut a, g, "", 300);
    let leader = first.member_id.to_string();
    assert_eq!(sync(&mut a, g, &leader, 1, true).error_code, 0);

    // B asks to join (the join parks until A rejoins), then vanishes.
    let mut b = connect(&spool);
    let r: JoinGroupResponse = call(
        &mut b,
        ApiKey::JoinGroup,
        5,
        &join_request(g, "", "consumer", 300),
    );
    assert_eq!(r.error_code, code(ResponseError::MemberIdRequired));
    use std::io::Write;
    b.write_all(&common::raw::request(
        ApiKey::JoinGroup,
        5,
        &join_request(g, &r.member_id, "consumer", 300),
    ))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while heartbeat(&mut a, g, &leader, 1) != code(ResponseError::RebalanceInProgress) {
        assert!(
            Instant::now() < deadline,
            "no rebalance signalled\n{}",
            spool.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(b);

    // A rejoins and keeps heartbeating; the group ends stable with A alone.
    let mut generation = 1;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "group did not converge\n{}",
            spool.log()
        );
        match heartbeat(&mut a, g, &leader, generation) {
            0 => {
                if group_state(&mut a, g) == ("Stable".to_string(), 1) {
                    break;
                }
            }
            e if e == code(ResponseError::RebalanceInProgress)
                || e == code(ResponseError::IllegalGeneration) =>
            {
                let r = join(&mut a, g, &leader, 300);
                assert_eq!(r.error_code, 0);
                generation = r.generation_id;
                assert_eq!(sync(&mut a, g, &leader, generation, true).error_code, 0);
            }
            e => panic!("unexpected heartbeat error {e}\n{}", spool.log()),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        generation >= 3,
        "B's expiry should have caused a second rebalance"
    );
}

/// Every served version of every group API answers (and encodes) for a minimal request.
#[test]
fn every_group_api_version_answers() {
    let spool = Spool::start_with(ARGS);
    let mut c = connect(&spool);
    create_topic(&mut c, "v", 1);
    for v in 0..=9i16 {
        let g = format!("v{v}");
        let mut req = join_request(&g, "", "consumer", 10_000);
        if v >= 5 {
            req = req.with_group_instance_id(Some(s(&format!("i{v}"))));
        }
        let mut r: JoinGroupResponse = call(&mut c, ApiKey::JoinGroup, v, &req);
        if r.error_code == code(ResponseError::MemberIdRequired) {
            assert_eq!(
                v, 4,
                "only a dynamic member from v4 is asked for a member id"
            );
            req = req.with_member_id(r.member_id.clone());
            r = call(&mut c, ApiKey::JoinGroup, v, &req);
        }
        assert_eq!(r.error_code, 0, "JoinGroup v{v}");
        let member = r.member_id.to_string();
        let sv = v.min(5);
        let mut sreq = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&g)))
            .with_member_id(s(&member))
            .with_generation_id(r.generation_id);
        if sv >= 3 && v >= 5 {
            sreq = sreq.with_group_instance_id(Some(s(&format!("i{v}"))));
        }
        if sv >= 5 {
            sreq = sreq
                .with_protocol_type(Some(s("consumer")))
                .with_protocol_name(Some(s("range")));
        }
        let sr: SyncGroupResponse = call(&mut c, ApiKey::SyncGroup, sv, &sreq);
        assert_eq!(sr.error_code, 0, "SyncGroup v{sv}");
        let hv = v.min(4);
        let mut hreq = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&g)))
            .with_member_id(s(&member))
            .with_generation_id(r.generation_id);
        if hv >= 3 && v >= 5 {
            hreq = hreq.with_group_instance_id(Some(s(&format!("i{v}"))));
        }
        let hr: HeartbeatResponse = call(&mut c, ApiKey::Heartbeat, hv, &hreq);
        assert_eq!(hr.error_code, 0, "Heartbeat v{hv}");
        for cv in 2..=9i16 {
            let topic = OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("v")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default().with_committed_offset(cv as i64)
                ]);
            let mut creq = OffsetCommitRequest::default()
                .with_group_id(GroupId(s(&g)))
                .with_member_id(s(&member))
                .with_generation_id_or_member_epoch(r.generation_id)
                .with_topics(vec![topic]);
            if cv >= 7 && v >= 5 {
                creq = creq.with_group_instance_id(Some(s(&format!("i{v}"))));
            }
            let cr: OffsetCommitResponse = call(&mut c, ApiKey::OffsetCommit, cv, &creq);
            assert_eq!(
                cr.topics[0].partitions[0].error_code, 0,
                "OffsetCommit v{cv}"
            );
        }
        for fv in 1..=9i16 {
            let freq = if fv >= 8 {
                let t = OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s("v")))
                    .with_partition_indexes(vec![0]);
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(&g)))
                    .with_topics(Some(vec![t]))])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(s(&g)))
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s("v")))
                        .with_partition_indexes(vec![0])]))
            };
            let fr: OffsetFetchResponse = call(&mut c, ApiKey::OffsetFetch, fv, &freq);
            let offset = if fv >= 8 {
                fr.groups[0].topics[0].partitions[0].committed_offset
            } else {
                fr.topics[0].partitions[0].committed_offset
            };
            assert_eq!(offset, 9, "OffsetFetch v{fv}");
        }
        let lv = v.min(5);
        let lreq = if lv >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&g)))
                .with_members(vec![MemberIdentity::default()
                    .with_member_id(s(&member))
                    .with_group_instance_id(
                        (lv >= 4 && v >= 5).then(|| s(&format!("i{v}"))),
                    )])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&g)))
                .with_member_id(s(&member))
        };
        let lr: LeaveGroupResponse = call(&mut c, ApiKey::LeaveGroup, lv, &lreq);
        assert_eq!(lr.error_code, 0, "LeaveGroup v{lv}");
        if lv >= 3 {
            assert_eq!(lr.members[0].error_code, 0, "LeaveGroup v{lv} member");
        }
    }
    for v in 0..=5i16 {
        let r: ListGroupsResponse =
            call(&mut c, ApiKey::ListGroups, v, &ListGroupsRequest::default());
        assert!(r.groups.len() >= 10, "ListGroups v{v}");
    }
    for v in 0..=6i16 {
        let r: DescribeGroupsResponse = call(
            &mut c,
            ApiKey::DescribeGroups,
            v,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("v1"))]),
        );
        assert_eq!(
            r.groups[0].group_state.as_str(),
            "Empty",
            "DescribeGroups v{v}"
        );
    }
    let r: OffsetDeleteResponse = call(
        &mut c,
        ApiKey::OffsetDelete,
        0,
        &OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("v0")))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(s("v")))
                .with_partitions(vec![OffsetDeleteRequestPartition::default()])]),
    );
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
    for v in 0..=2i16 {
        let r: DeleteGroupsResponse = call(
            &mut c,
            ApiKey::DeleteGroups,
            v,
            &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(&format!("v{v}")))]),
        );
        assert_eq!(r.results[0].error_code, 0, "DeleteGroups v{v}");
    }
}
