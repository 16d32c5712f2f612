use std::collections::BTreeMap;

/// Per-log settings. Keys use the same names as Kafka's topic configs so that admin tools map
/// one to one; the store gives them meaning only for files on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Roll to a new segment when the active one reaches this size (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll when the active segment is older than this (`segment.ms`).
    pub segment_ms: u64,
    /// Delete closed segments whose newest entry is older than this; `None` keeps forever
    /// (`retention.ms`, -1 for none).
    pub retention_ms: Option<u64>,
    /// Delete the oldest closed segments while the log is larger than this (`retention.bytes`).
    pub retention_bytes: Option<u64>,
    /// fsync once this many entries are unflushed, and hold acknowledgements until it is done
    /// (`flush.messages`); `None` never forces a flush by count.
    pub flush_messages: Option<u64>,
    /// fsync in the background at most this long after a write (`flush.ms`); `None` leaves it
    /// to the operating system.
    pub flush_ms: Option<u64>,
    /// Bytes between sparse offset-index entries (`index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// Largest frame accepted (`max.message.bytes`).
    pub max_message_bytes: u32,
    /// Stamp each batch with the time it is appended rather than keep the writer's timestamps
    /// (`message.timestamp.type`: `LogAppendTime` rather than `CreateTime`). The store only
    /// keeps the setting; whoever frames the batches stamps them before appending, so the
    /// time index sees the stamped time.
    pub log_append_time: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            flush_messages: None,
            flush_ms: Some(1000),
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            log_append_time: false,
        }
    }
}

/// A config key or value the store does not accept.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown config '{0}'")]
    UnknownKey(String),
    #[error("invalid value '{value}' for config '{key}': {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: &'static str,
    },
}

/// Keys this store understands, with their defaults rendered as strings.
pub const KNOWN_KEYS: &[&str] = &[
    "segment.bytes",
    "segment.ms",
    "retention.ms",
    "retention.bytes",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "message.timestamp.type",
];

impl LogConfig {
    /// Builds a config from defaults overlaid with `overrides`; unknown keys are refused.
    pub fn from_overrides(
        base: &LogConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<LogConfig, ConfigError> {
        let mut c = base.clone();
        for (k, v) in overrides {
            c.set(k, v)?;
        }
        Ok(c)
    }

    /// True when `key` is a config a log understands.
    pub fn is_known(key: &str) -> bool {
        KNOWN_KEYS.contains(&key)
    }

    /// Sets one key from its string form, as an admin request carries it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let bad = |reason| ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        };
        let num = || {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| bad("not an integer"))
        };
        let positive = |n: i64| {
            if n > 0 {
                Ok(n as u64)
            } else {
                Err(bad("must be positive"))
            }
        };
        let optional = |n: i64| match n {
            -1 => Ok(None),
            n if n >= 0 => Ok(Some(n as u64)),
            _ => Err(bad("must be -1 or non-negative")),
        };
        match key {
            "segment.bytes" => {
                let n = positive(num()?)?;
                if n < 14 {
                    return Err(bad("must be at least 14"));
                }
                self.segment_bytes = n
            }
            "segment.ms" => self.segment_ms = positive(num()?)?,
            "retention.ms" => self.retention_ms = optional(num()?)?,
            "retention.bytes" => self.retention_bytes = optional(num()?)?,
            // Kafka's default for both is Long.MAX_VALUE: treat huge values as "never".
            "flush.messages" => {
                let n = positive(num()?)?;
                self.flush_messages = (n < i64::MAX as u64).then_some(n)
            }
            "flush.ms" => {
                let n = num()?;
                if n < 0 {
                    return Err(bad("must be non-negative"));
                }
                self.flush_ms = (n < i64::MAX).then_some(n as u64)
            }
            "index.interval.bytes" => {
                self.index_interval_bytes =
                    u32::try_from(num()?).map_err(|_| bad("must fit in 32 bits"))?
            }
            "max.message.bytes" => {
                let n = positive(num()?)?;
                self.max_message_bytes = u32::try_from(n).map_err(|_| bad("must fit in 32 bits"))?
            }
            "message.timestamp.type" => {
                self.log_append_time = match value.trim() {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => return Err(bad("must be CreateTime or LogAppendTime")),
                }
            }
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }

    /// Every key with its effective value, as DescribeConfigs shows them.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "-1".into());
        vec![
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            ("retention.ms", opt(self.retention_ms)),
            ("retention.bytes", opt(self.retention_bytes)),
            (
                "flush.messages",
                self.flush_messages
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| i64::MAX.to_string()),
            ),
            (
                "flush.ms",
                self.flush_ms
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| i64::MAX.to_string()),
            ),
            (
                "index.interval.bytes",
                self.index_interval_bytes.to_string(),
            ),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            (
                "message.timestamp.type",
                if self.log_append_time {
                    "LogAppendTime"
                } else {
                    "CreateTime"
                }
                .to_string(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_unknown_keys_are_refused() {
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "-1".to_string());
        o.insert("segment.bytes".to_string(), "1024".to_string());
        let c = LogConfig::from_overrides(&LogConfig::default(), &o).unwrap();
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.segment_bytes, 1024);
        o.insert("no.such".into(), "1".into());
        assert!(matches!(
            LogConfig::from_overrides(&LogConfig::default(), &o),
            Err(ConfigError::UnknownKey(_))
        ));
        let mut c = LogConfig::default();
        assert!(c.set("segment.bytes", "abc").is_err());
        assert!(c.set("flush.ms", "-5").is_err());
        assert!(c.set("message.timestamp.type", "Now").is_err());
        c.set("message.timestamp.type", "LogAppendTime").unwrap();
        assert!(c.log_append_time);
    }
}
