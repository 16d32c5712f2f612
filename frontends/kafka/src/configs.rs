//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and read-only broker
//! configs).

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use spool_actors::registry::AlterTopicConfig;
use spool_actors::BrokerError;
use spool_store::LogConfig;

use crate::error_codes;
use crate::handler::{message, str_bytes, Ctx};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// Kafka's config sources.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;
/// Kafka's config types.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

fn config_type(key: &str) -> i8 {
    match key {
        "segment.bytes" | "index.interval.bytes" | "max.message.bytes" | "num.partitions" => {
            TYPE_INT
        }
        "auto.create.topics.enable" => TYPE_BOOLEAN,
        "message.timestamp.type" => TYPE_STRING,
        _ => TYPE_LONG,
    }
}

fn entry(key: &str, value: String, source: i8, read_only: bool) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(key))
        .with_value(Some(str_bytes(value)))
        .with_config_source(source)
        .with_read_only(read_only)
        .with_config_type(config_type(key))
}

pub(crate) fn describe(ctx: &Ctx, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let snapshot = ctx.broker.catalog.snapshot();
    let mut results = Vec::new();
    for r in req.resources {
        let out = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let wanted = |k: &str| {
            r.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|x| x.as_str() == k))
        };
        let configs = match r.resource_type {
            TOPIC => match snapshot.topic(&r.resource_name) {
                Some(t) => t
                    .config
                    .entries()
                    .into_iter()
                    .filter(|(k, _)| wanted(k))
                    .map(|(k, v)| {
                        let source = if t.overrides.contains_key(k) {
                            DYNAMIC_TOPIC_CONFIG
                        } else {
                            DEFAULT_CONFIG
                        };
                        entry(k, v, source, false)
                    })
                    .collect(),
                None => {
                    results
                        .push(out.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                    continue;
                }
            },
            BROKER => {
                let c = &ctx.broker.config;
                let mut entries = vec![
                    ("num.partitions", c.default_partitions.to_string()),
                    (
                        "auto.create.topics.enable",
                        c.auto_create_topics.to_string(),
                    ),
                ];
                entries.extend(
                    c.log_defaults
                        .entries()
                        .into_iter()
                        .map(|(k, v)| (broker_key(k), v)),
                );
                entries
                    .into_iter()
                    .filter(|(k, _)| wanted(k))
                    .map(|(k, v)| entry(k, v, STATIC_BROKER_CONFIG, true))
                    .collect()
            }
            _ => {
                results.push(
                    out.with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(str_bytes(
                            "only topic and broker resources are served",
                        ))),
                );
                continue;
            }
        };
        results.push(out.with_configs(configs));
    }
    DescribeConfigsResponse::default().with_results(results)
}

/// Broker-level names of the log defaults, as Kafka spells them.
fn broker_key(topic_key: &str) -> &'static str {
    match topic_key {
        "segment.bytes" => "log.segment.bytes",
        "segment.ms" => "log.roll.ms",
        "retention.ms" => "log.retention.ms",
        "retention.bytes" => "log.retention.bytes",
        "flush.messages" => "log.flush.interval.messages",
        "flush.ms" => "log.flush.interval.ms",
        "index.interval.bytes" => "log.index.interval.bytes",
        _ => "message.max.bytes",
    }
}

/// One resource change, already turned into the topic's complete new override set.
async fn apply(
    ctx: &Ctx,
    resource_type: i8,
    name: &StrBytes,
    overrides: Result<BTreeMap<String, String>, BrokerError>,
    validate_only: bool,
) -> (i16, Option<StrBytes>) {
    if resource_type != TOPIC {
        return (
            ResponseError::InvalidRequest.code(),
            Some(str_bytes(
                "broker configs are static: set them on the command line or in the config file",
            )),
        );
    }
    let overrides = match overrides {
        Ok(o) => o,
        Err(e) => return (error_codes::code(&e), message(&e)),
    };
    let sent = ctx
        .broker
        .registry
        .send(AlterTopicConfig {
            name: name.to_string(),
            overrides,
            validate_only,
        })
        .await
        .unwrap_or_else(|_| {
            Err(BrokerError::InvalidConfig(
                "the topic registry is unavailable".into(),
            ))
        });
    match sent {
        Ok(()) => (0, None),
        Err(e) => (error_codes::code(&e), message(&e)),
    }
}

fn check_key(key: &str) -> Result<(), BrokerError> {
    if LogConfig::is_known(key) {
        Ok(())
    } else {
        Err(BrokerError::InvalidConfig(format!(
            "unknown topic config '{key}'"
        )))
    }
}

/// AlterConfigs replaces a topic's whole override set with the one given.
pub(crate) async fn alter(ctx: &Ctx, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for r in req.resources {
        let overrides = r
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .map(|(k, v)| check_key(&k).map(|_| (k, v)))
            .collect::<Result<BTreeMap<_, _>, _>>();
        let (code, msg) = apply(
            ctx,
            r.resource_type,
            &r.resource_name,
            overrides,
            req.validate_only,
        )
        .await;
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(msg),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs applies SET (0) and DELETE (1); APPEND and SUBTRACT apply only to
/// list configs, which topics here do not have.
pub(crate) async fn incremental_alter(
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let snapshot = ctx.broker.catalog.snapshot();
    let mut responses = Vec::new();
    for r in req.resources {
        let overrides = (|| {
            let mut o = match snapshot.topic(&r.resource_name) {
                Some(t) => t.overrides.clone(),
                None => return Err(BrokerError::UnknownTopic(r.resource_name.to_string())),
            };
            for c in &r.configs {
                check_key(&c.name)?;
                match (c.config_operation, &c.value) {
                    (0, Some(v)) => {
                        o.insert(c.name.to_string(), v.to_string());
                    }
                    (0, None) => {
                        return Err(BrokerError::InvalidConfig(format!(
                            "SET of '{}' without a value",
                            c.name
                        )))
                    }
                    (1, _) => {
                        o.remove(c.name.as_str());
                    }
                    (2 | 3, _) => {
                        return Err(BrokerError::InvalidConfig(format!(
                            "'{}' is not a list config: APPEND and SUBTRACT do not apply",
                            c.name
                        )))
                    }
                    (op, _) => {
                        return Err(BrokerError::InvalidConfig(format!(
                            "unknown operation {op}"
                        )))
                    }
                }
            }
            Ok(o)
        })();
        let (code, msg) = apply(
            ctx,
            r.resource_type,
            &r.resource_name,
            overrides,
            req.validate_only,
        )
        .await;
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(msg),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
