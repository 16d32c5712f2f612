//! Consumer-group members over HTTP, in the manner of Kafka REST proxies. An HTTP member is a
//! real member of a consumer-protocol group (KIP-848): the coordinator assigns it partitions
//! beside Kafka consumers of the same group, and each poll is its heartbeat.
//! - `POST /groups/{group}/members` with `{"topics", "auto_offset_reset", "client_id"}` joins
//!   (201 with the `member_id`);
//! - `GET /groups/{group}/members/{member}/records?timeout_ms=&max_bytes=` heartbeats, takes up
//!   a new assignment, and reads the assigned partitions from their positions (long-polling up
//!   to `timeout_ms`);
//! - `POST /groups/{group}/members/{member}/offsets` commits the positions (or the offsets in
//!   `{"offsets": [{"topic", "partition", "offset"}]}`);
//! - `GET /groups/{group}/members/{member}` shows the assignment and positions;
//! - `DELETE /groups/{group}/members/{member}` leaves the group.
//!
//! A member that does not poll within the group's session timeout is removed by the
//! coordinator, as a silent Kafka consumer would be; its next request answers 404. Positions of
//! a partition taken away are dropped: what was read but not committed is read again by the
//! partition's next owner (at least once).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::{select_all, FutureExt};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use spool_actors::consumer_group::{HeartbeatRequest, LEAVE_EPOCH};
use spool_actors::group::{FetchOffsets, GroupActor};
use spool_actors::group_consumer::ConsumerGroupHeartbeat;
use spool_actors::partition::{AwaitRecords, DescribeLog, ReadRecords};
use spool_actors::queues::record;
use spool_actors::{Broker, BrokerError};

use crate::errors::{answered, bad_request, broker_error, unavailable};
use crate::groups::find;
use crate::records::{render, tokio_timeout};

/// How long a member may take to give up revoked partitions (it does so on its next poll).
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
/// Longest one poll may wait for records.
const MAX_WAIT_MS: u64 = 30_000;
/// How often a waiting poll heartbeats, so a pending assignment arrives while it waits.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);

type Partition = (String, i32);

/// Where a member starts in a partition its group has no committed offset for.
#[derive(Debug, Clone, Copy, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    Earliest,
    /// Kafka's default.
    #[default]
    Latest,
}

/// One HTTP member's client-side state: what a Kafka consumer keeps in its process.
struct Member {
    epoch: i32,
    client_id: String,
    reset: OffsetReset,
    /// The assignment as the coordinator last sent it.
    owned: Vec<(spool_actors::assignor::TopicId, i32)>,
    /// Next offset to read, per assigned partition.
    positions: BTreeMap<Partition, i64>,
    last_used: Instant,
}

/// The HTTP members of every group, by (group, member id).
#[derive(Default)]
pub struct Members(Mutex<HashMap<(String, String), Shared>>);

/// One member, locked for the length of a request (a member serves one request at a time).
type Shared = Arc<tokio::sync::Mutex<Member>>;

impl Members {
    fn get(&self, group: &str, member: &str) -> Option<Shared> {
        let map = self.0.lock().expect("members lock");
        map.get(&(group.to_string(), member.to_string())).cloned()
    }

    fn remove(&self, group: &str, member: &str) {
        let mut map = self.0.lock().expect("members lock");
        map.remove(&(group.to_string(), member.to_string()));
    }

    /// Forgets members unused for longer than any session could last.
    fn sweep(&self, idle: Duration) {
        let mut map = self.0.lock().expect("members lock");
        map.retain(|_, m| m.try_lock().map_or(true, |m| m.last_used.elapsed() < idle));
    }
}

fn unknown_member(member: &str) -> HttpResponse {
    broker_error(BrokerError::UnknownMemberId(member.to_string()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    topics: Vec<String>,
    #[serde(default)]
    auto_offset_reset: OffsetReset,
    client_id: Option<String>,
}

/// `POST /groups/{group}/members`.
#[utoipa::path(
    post,
    path = "/groups/{group}/members",
    tag = "members",
    summary = "Join a group as a consumer-protocol member",
    params(("group" = String, Path, description = "Consumer group id")),
    request_body = JoinBody,
    responses((status = 201, description = "The member id and assignment"), (status = 400, description = "Bad input"))
)]
pub async fn join(
    broker: web::Data<Broker>,
    members: web::Data<Members>,
    group: web::Path<String>,
    body: web::Json<JoinBody>,
    req: HttpRequest,
) -> HttpResponse {
    let body = body.into_inner();
    if body.topics.is_empty() {
        return bad_request("topics must name at least one topic");
    }
    let session = broker.config.groups.consumer.session_timeout;
    members.sweep(session * 4);
    let addr = match find(&broker, &group, true).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut m = Member {
        epoch: 0,
        client_id: body.client_id.unwrap_or_else(|| "spool-http".into()),
        reset: body.auto_offset_reset,
        owned: Vec::new(),
        positions: BTreeMap::new(),
        last_used: Instant::now(),
    };
    let host = peer(&req);
    let member_id = match heartbeat(&broker, &addr, "", &mut m, &host, Some(body.topics)).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let shown = show(&member_id, &m);
    members.0.lock().expect("members lock").insert(
        (group.into_inner(), member_id),
        Arc::new(tokio::sync::Mutex::new(m)),
    );
    HttpResponse::build(StatusCode::CREATED).json(shown)
}

fn peer(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| format!("/{}", a.ip()))
        .unwrap_or_default()
}

/// A member as the API shows it.
fn show(member_id: &str, m: &Member) -> Value {
    let assignment: Vec<Value> = m
        .positions
        .iter()
        .map(|((t, p), o)| json!({"topic": t, "partition": p, "position": o}))
        .collect();
    json!({
        "member_id": member_id,
        "member_epoch": m.epoch,
        "assignment": assignment,
    })
}

/// One heartbeat (a join when `subscribe` is set): adopts the assignment it brings, and when
/// partitions were taken away says so at once, so their next owner need not wait. Answers the
/// member id.
async fn heartbeat(
    broker: &Broker,
    addr: &Addr<GroupActor>,
    member_id: &str,
    m: &mut Member,
    host: &str,
    subscribe: Option<Vec<String>>,
) -> Result<String, HttpResponse> {
    let mut member_id = member_id.to_string();
    let mut subscribe = subscribe;
    for _ in 0..2 {
        let joining = subscribe.is_some();
        let request = HeartbeatRequest {
            member_id: member_id.clone(),
            member_epoch: m.epoch,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: if joining { REBALANCE_TIMEOUT_MS } else { -1 },
            subscribed_topic_names: subscribe.take(),
            subscribed_topic_regex: None,
            server_assignor: None,
            owned: Some(m.owned.clone()),
            client_id: m.client_id.clone(),
            client_host: host.to_string(),
        };
        let answer = answered(
            addr.send(ConsumerGroupHeartbeat { request }).await,
            "the group",
        )?;
        member_id = answer.member_id;
        m.epoch = answer.member_epoch;
        let Some(assignment) = answer.assignment else {
            break;
        };
        let revoked = adopt(broker, addr, m, assignment).await?;
        if !revoked {
            break;
        }
    }
    Ok(member_id)
}

/// Takes up a new assignment: positions of new partitions come from the group's committed
/// offsets, else from the reset policy. True when partitions were taken away.
async fn adopt(
    broker: &Broker,
    addr: &Addr<GroupActor>,
    m: &mut Member,
    assignment: Vec<(spool_actors::assignor::TopicId, i32)>,
) -> Result<bool, HttpResponse> {
    let snapshot = broker.catalog.snapshot();
    let named: Vec<Partition> = assignment
        .iter()
        .filter_map(|(id, p)| snapshot.topic_by_id(id).map(|t| (t.name.to_string(), *p)))
        .collect();
    let before = m.positions.len();
    m.positions.retain(|tp, _| named.contains(tp));
    let revoked = m.positions.len() < before;
    let added: Vec<Partition> = named
        .into_iter()
        .filter(|tp| !m.positions.contains_key(tp))
        .collect();
    m.owned = assignment;
    if added.is_empty() {
        return Ok(revoked);
    }
    let committed = addr
        .send(FetchOffsets {
            partitions: Some(added.clone()),
        })
        .await
        .map_err(|_| unavailable("the group"))?;
    for (tp, c) in committed {
        let offset = match c {
            Some(c) if c.offset >= 0 => c.offset,
            _ => reset_position(broker, &tp, m.reset).await?,
        };
        m.positions.insert(tp, offset);
    }
    Ok(revoked)
}

/// The start or end of a partition, as the reset policy says.
async fn reset_position(
    broker: &Broker,
    (topic, partition): &Partition,
    reset: OffsetReset,
) -> Result<i64, HttpResponse> {
    let actor = broker
        .catalog
        .snapshot()
        .partition(topic, *partition)
        .and_then(|p| p.local.clone());
    let Some(actor) = actor else {
        return Err(unavailable(format!("{topic}-{partition}")));
    };
    let log = actor
        .send(DescribeLog)
        .await
        .map_err(|_| unavailable(format!("{topic}-{partition}")))?;
    Ok(match reset {
        OffsetReset::Earliest => log.log_start_offset as i64,
        OffsetReset::Latest => log.high_watermark as i64,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PollQuery {
    timeout_ms: Option<u64>,
    max_bytes: Option<usize>,
}

/// `GET /groups/{group}/members/{member}/records`.
#[utoipa::path(
    get,
    path = "/groups/{group}/members/{member}/records",
    tag = "members",
    summary = "Heartbeat and read the assigned partitions (long-poll)",
    params(("group" = String, Path, description = "Consumer group id"), ("member" = String, Path, description = "Member id from the join answer"), PollQuery),
    responses((status = 200, description = "Assignment and records"), (status = 404, description = "Unknown member"), (status = 409, description = "Fenced"))
)]
pub async fn poll(
    broker: web::Data<Broker>,
    members: web::Data<Members>,
    path: web::Path<(String, String)>,
    query: web::Query<PollQuery>,
    req: HttpRequest,
) -> HttpResponse {
    let (group, member_id) = path.into_inner();
    let Some(entry) = members.get(&group, &member_id) else {
        return unknown_member(&member_id);
    };
    let mut m = entry.lock().await;
    m.last_used = Instant::now();
    let addr = match find(&broker, &group, false).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let host = peer(&req);
    let deadline =
        Instant::now() + Duration::from_millis(query.timeout_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let max_bytes = query.max_bytes.unwrap_or(1 << 20).clamp(1, 64 << 20);
    loop {
        if let Err(r) = heartbeat(&broker, &addr, &member_id, &mut m, &host, None).await {
            if r.status() == StatusCode::NOT_FOUND || r.status() == StatusCode::CONFLICT {
                members.remove(&group, &member_id);
            }
            return r;
        }
        let records = match read_assigned(&broker, &mut m, max_bytes).await {
            Ok(r) => r,
            Err(r) => return r,
        };
        let now = Instant::now();
        if !records.is_empty() || now >= deadline {
            let mut out = show(&member_id, &m);
            out["records"] = Value::Array(records);
            return HttpResponse::Ok().json(out);
        }
        let wait = (deadline - now).min(HEARTBEAT_EVERY);
        await_any(&broker, &m, wait).await;
    }
}

/// Reads every assigned partition from its position, up to `max_bytes` in all, and moves the
/// positions past what it returns.
async fn read_assigned(
    broker: &Broker,
    m: &mut Member,
    max_bytes: usize,
) -> Result<Vec<Value>, HttpResponse> {
    let snapshot = broker.catalog.snapshot();
    let mut out = Vec::new();
    let mut budget = max_bytes;
    let reset = m.reset;
    for ((topic, partition), position) in m.positions.iter_mut() {
        if budget == 0 {
            break;
        }
        let Some(actor) = snapshot
            .partition(topic, *partition)
            .and_then(|p| p.local.clone())
        else {
            continue;
        };
        let read = match actor
            .send(ReadRecords {
                offset: *position as u64,
                max_bytes: budget,
            })
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(BrokerError::OffsetOutOfRange { .. })) => {
                *position = reset_position(broker, &(topic.clone(), *partition), reset).await?;
                continue;
            }
            Ok(Err(e)) => return Err(broker_error(e)),
            Err(_) => continue,
        };
        budget = budget.saturating_sub(read.records.len());
        let stored = record::decode(read.records).map_err(broker_error)?;
        let from = *position;
        for s in stored.into_iter().filter(|s| s.offset as i64 >= from) {
            *position = s.offset as i64 + 1;
            let mut head = Map::new();
            head.insert("topic".into(), json!(topic));
            head.insert("partition".into(), json!(partition));
            out.push(render(s, head));
        }
    }
    Ok(out)
}

/// Waits until any assigned partition has a record past its position, at most `wait`.
async fn await_any(broker: &Broker, m: &Member, wait: Duration) {
    let snapshot = broker.catalog.snapshot();
    let waits: Vec<_> = m
        .positions
        .iter()
        .filter_map(|((t, p), o)| {
            let actor = snapshot.partition(t, *p).and_then(|x| x.local.clone())?;
            let offset = *o as u64;
            Some(async move { actor.send(AwaitRecords { offset }).await }.boxed_local())
        })
        .collect();
    if waits.is_empty() {
        // Nothing assigned yet: the next heartbeat may bring partitions.
        actix_web::rt::time::sleep(wait).await;
        return;
    }
    let _ = tokio_timeout(wait, select_all(waits)).await;
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    offsets: Vec<CommitEntry>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitEntry {
    topic: String,
    partition: i32,
    offset: i64,
}

/// `POST /groups/{group}/members/{member}/offsets`: the body is optional.
#[utoipa::path(
    post,
    path = "/groups/{group}/members/{member}/offsets",
    tag = "members",
    summary = "Commit positions, or the given offsets",
    params(("group" = String, Path, description = "Consumer group id"), ("member" = String, Path, description = "Member id from the join answer")),
    request_body = Option<CommitBody>,
    responses((status = 200, description = "The committed offsets"), (status = 400, description = "Bad body"), (status = 404, description = "Unknown member"))
)]
pub async fn commit(
    broker: web::Data<Broker>,
    members: web::Data<Members>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (group, member_id) = path.into_inner();
    let Some(entry) = members.get(&group, &member_id) else {
        return unknown_member(&member_id);
    };
    let mut m = entry.lock().await;
    m.last_used = Instant::now();
    let offsets: Vec<(Partition, i64)> = if body.iter().all(u8::is_ascii_whitespace) {
        m.positions.iter().map(|(tp, o)| (tp.clone(), *o)).collect()
    } else {
        match serde_json::from_slice::<CommitBody>(&body) {
            Ok(b) => b
                .offsets
                .into_iter()
                .map(|e| ((e.topic, e.partition), e.offset))
                .collect(),
            Err(e) => return bad_request(format!("invalid JSON body: {e}")),
        }
    };
    if let Some((tp, o)) = offsets.iter().find(|(_, o)| *o < 0) {
        return bad_request(format!("{}-{}: offset {o} is negative", tp.0, tp.1));
    }
    let addr = match find(&broker, &group, false).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    crate::groups::commit(&addr, member_id, m.epoch, &offsets).await
}

/// `GET /groups/{group}/members/{member}`.
#[utoipa::path(
    get,
    path = "/groups/{group}/members/{member}",
    tag = "members",
    summary = "A member's assignment and positions",
    params(("group" = String, Path, description = "Consumer group id"), ("member" = String, Path, description = "Member id from the join answer")),
    responses((status = 200, description = "OK"), (status = 404, description = "Unknown member"))
)]
pub async fn describe(
    members: web::Data<Members>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (group, member_id) = path.into_inner();
    match members.get(&group, &member_id) {
        Some(entry) => HttpResponse::Ok().json(show(&member_id, &*entry.lock().await)),
        None => unknown_member(&member_id),
    }
}

/// `DELETE /groups/{group}/members/{member}`: leaves the group (its partitions go to the
/// others at once).
#[utoipa::path(
    delete,
    path = "/groups/{group}/members/{member}",
    tag = "members",
    summary = "Leave the group",
    params(("group" = String, Path, description = "Consumer group id"), ("member" = String, Path, description = "Member id from the join answer")),
    responses((status = 204, description = "Left"), (status = 404, description = "Unknown member"))
)]
pub async fn leave(
    broker: web::Data<Broker>,
    members: web::Data<Members>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> HttpResponse {
    let (group, member_id) = path.into_inner();
    let Some(entry) = members.get(&group, &member_id) else {
        return unknown_member(&member_id);
    };
    members.remove(&group, &member_id);
    let m = entry.lock().await;
    let addr = match find(&broker, &group, false).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let request = HeartbeatRequest {
        member_id,
        member_epoch: LEAVE_EPOCH,
        instance_id: None,
        rack_id: None,
        rebalance_timeout_ms: -1,
        subscribed_topic_names: None,
        subscribed_topic_regex: None,
        server_assignor: None,
        owned: None,
        client_id: m.client_id.clone(),
        client_host: peer(&req),
    };
    match answered(
        addr.send(ConsumerGroupHeartbeat { request }).await,
        "the group",
    ) {
        Ok(_) => HttpResponse::NoContent().finish(),
        Err(r) => r,
    }
}
