//! `spool groups list|describe|reset-offsets`: consumer groups of a running broker, over the
//! Kafka protocol (so it works against any Kafka-compatible broker too).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::bench_wire::Conn;

/// Options of `spool groups`.
#[derive(Debug, Args)]
pub struct GroupsArgs {
    /// Broker to ask.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(Debug, Subcommand)]
enum GroupsCommand {
    /// Every group with its state.
    List,
    /// A group's state, members, and per partition its committed offset, end offset and lag.
    Describe { group: String },
    /// Moves a group's committed offsets for a topic; refused while the group has members.
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// To the log start.
        #[arg(long, group = "to")]
        to_earliest: bool,
        /// To the log end.
        #[arg(long, group = "to")]
        to_latest: bool,
        /// To the first record at or after this time (milliseconds since the epoch).
        #[arg(long, group = "to")]
        to_timestamp: Option<i64>,
        /// To this offset in every partition.
        #[arg(long, group = "to")]
        to_offset: Option<i64>,
    },
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub fn run(args: GroupsArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut conn = Conn::connect(&args.bootstrap).await?;
        match args.command {
            GroupsCommand::List => list(&mut conn).await,
            GroupsCommand::Describe { group } => describe(&mut conn, &group).await,
            GroupsCommand::ResetOffsets {
                group,
                topic,
                to_earliest,
                to_latest,
                to_timestamp,
                to_offset,
            } => {
                let to = match (to_earliest, to_latest, to_timestamp, to_offset) {
                    (true, ..) => Target::Time(-2),
                    (_, true, ..) => Target::Time(-1),
                    (_, _, Some(ts), _) => Target::Time(ts),
                    (_, _, _, Some(o)) => Target::Offset(o),
                    _ => bail!(
                        "say where to: --to-earliest, --to-latest, --to-timestamp or --to-offset"
                    ),
                };
                reset(&mut conn, &group, &topic, to).await
            }
        }
    })
}

async fn list(conn: &mut Conn) -> anyhow::Result<()> {
    let r: ListGroupsResponse = conn
        .call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())
        .await?;
    println!("{:<40} {:<20} STATE", "GROUP", "PROTOCOL TYPE");
    for g in r.groups {
        println!(
            "{:<40} {:<20} {}",
            g.group_id.as_str(),
            g.protocol_type.as_str(),
            g.group_state.as_str()
        );
    }
    Ok(())
}

/// State and member count of a group.
async fn state(conn: &mut Conn, group: &str) -> anyhow::Result<(String, usize)> {
    let r: DescribeGroupsResponse = conn
        .call(
            ApiKey::DescribeGroups,
            5,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]),
        )
        .await?;
    let g = r.groups.first().context("no answer for the group")?;
    let (code, state, members) = if g.error_code == ResponseError::GroupIdNotFound.code() {
        // Not a classic group: it may be a consumer-protocol (KIP-848) one.
        let r: ConsumerGroupDescribeResponse = conn
            .call(
                ApiKey::ConsumerGroupDescribe,
                0,
                &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(group))]),
            )
            .await?;
        let g = r.groups.first().context("no answer for the group")?;
        (g.error_code, g.group_state.to_string(), g.members.len())
    } else {
        (g.error_code, g.group_state.to_string(), g.members.len())
    };
    if code != 0 {
        bail!("describing {group} failed: error {code}");
    }
    Ok((state, members))
}

/// Per partition of every topic the group has offsets for: (topic, partition, committed).
async fn committed(conn: &mut Conn, group: &str) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let r: OffsetFetchResponse = conn
        .call(
            ApiKey::OffsetFetch,
            8,
            &OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(None)]),
        )
        .await?;
    let g = r.groups.first().context("no answer for the group")?;
    if g.error_code != 0 {
        bail!("fetching offsets of {group} failed: error {}", g.error_code);
    }
    Ok(g.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index, p.committed_offset))
        })
        .collect())
}

/// The offset of each partition for a ListOffsets timestamp (-1 latest, -2 earliest).
async fn offsets_at(
    conn: &mut Conn,
    topic: &str,
    partitions: &[i32],
    time: i64,
) -> anyhow::Result<Vec<i64>> {
    let r: ListOffsetsResponse = conn
        .call(
            ApiKey::ListOffsets,
            7,
            &ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(*p)
                                    .with_timestamp(time)
                            })
                            .collect(),
                    )]),
        )
        .await?;
    let t = r.topics.first().context("no answer for the topic")?;
    partitions
        .iter()
        .map(|p| {
            let part = t
                .partitions
                .iter()
                .find(|x| x.partition_index == *p)
                .context("partition missing from the answer")?;
            if part.error_code != 0 {
                bail!("{topic}-{p}: error {}", part.error_code);
            }
            Ok(part.offset)
        })
        .collect()
}

async fn describe(conn: &mut Conn, group: &str) -> anyhow::Result<()> {
    let (state, members) = state(conn, group).await?;
    println!("group {group}: {state}, {members} members");
    println!(
        "{:<30} {:>9} {:>12} {:>12} {:>10}",
        "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"
    );
    for (topic, partition, committed) in committed(conn, group).await? {
        let end = offsets_at(conn, &topic, &[partition], -1).await?[0];
        let lag = if committed >= 0 {
            (end - committed).max(0)
        } else {
            end
        };
        println!("{topic:<30} {partition:>9} {committed:>12} {end:>12} {lag:>10}");
    }
    Ok(())
}

enum Target {
    Time(i64),
    Offset(i64),
}

async fn reset(conn: &mut Conn, group: &str, topic: &str, to: Target) -> anyhow::Result<()> {
    let (state, members) = state(conn, group).await?;
    if members > 0 {
        bail!("group {group} is {state} with {members} members: stop its consumers first");
    }
    let meta: MetadataResponse = conn
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(s(topic))))
            ])),
        )
        .await?;
    let t = meta.topics.first().context("no answer for the topic")?;
    if t.error_code != 0 {
        bail!("topic {topic}: error {}", t.error_code);
    }
    let mut partitions: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
    partitions.sort();
    let offsets = match to {
        Target::Time(ts) => offsets_at(conn, topic, &partitions, ts).await?,
        Target::Offset(o) => vec![o; partitions.len()],
    };
    let r: OffsetCommitResponse = conn
        .call(
            ApiKey::OffsetCommit,
            8,
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(
                        partitions
                            .iter()
                            .zip(&offsets)
                            .map(|(p, o)| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(*o)
                            })
                            .collect(),
                    )]),
        )
        .await?;
    for (p, part) in r
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .enumerate()
    {
        if part.error_code != 0 {
            bail!(
                "{topic}-{}: commit refused with error {}",
                partitions[p],
                part.error_code
            );
        }
    }
    for (p, o) in partitions.iter().zip(&offsets) {
        println!("{topic}-{p}: {o}");
    }
    Ok(())
}
