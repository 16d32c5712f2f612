//! Which nodes are alive, as the controller judges it: a plain state machine fed heartbeats and
//! the clock, as Kafka's controller tracks broker sessions.
//!
//! A node is alive while its last heartbeat is younger than the session timeout. A controller
//! that has just taken over has heard nobody yet: every node gets a full session from the
//! moment it took over before it can be fenced.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::metadata::{Metadata, NodeId};

/// Heartbeats heard by this node while it is the controller.
#[derive(Debug)]
pub struct Liveness {
    session_timeout: Duration,
    /// When this node last became the controller (`None`: it is not the controller).
    leading_since: Option<Instant>,
    heard: HashMap<NodeId, Instant>,
}

impl Liveness {
    /// Sessions lasting `session_timeout` after each heartbeat.
    pub fn new(session_timeout: Duration) -> Liveness {
        Liveness {
            session_timeout,
            leading_since: None,
            heard: HashMap::new(),
        }
    }

    /// This node is the controller from `now` (or is no longer, with `leading` false): what it
    /// heard in an earlier term counts no more.
    pub fn set_leading(&mut self, leading: bool, now: Instant) {
        match (leading, self.leading_since) {
            (true, None) => {
                self.leading_since = Some(now);
                self.heard.clear();
            }
            (false, Some(_)) => {
                self.leading_since = None;
                self.heard.clear();
            }
            _ => {}
        }
    }

    /// Node `node` sent a heartbeat at `now`.
    pub fn heard(&mut self, node: NodeId, now: Instant) {
        self.heard.insert(node, now);
    }

    /// Registered, unfenced nodes whose session has run out at `now`: the ones to fence.
    /// Nothing while this node is not the controller.
    pub fn expired(&self, metadata: &Metadata, now: Instant) -> Vec<NodeId> {
        let Some(since) = self.leading_since else {
            return Vec::new();
        };
        metadata
            .live_nodes()
            .filter(|n| {
                let last = self.heard.get(&n.id).copied().unwrap_or(since).max(since);
                now.duration_since(last) > self.session_timeout
            })
            .map(|n| n.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Command, NodeRecord};

    fn metadata(ids: &[NodeId]) -> Metadata {
        let mut m = Metadata::default();
        for id in ids {
            m.apply(Command::RegisterNode {
                node: NodeRecord {
                    id: *id,
                    host: "h".into(),
                    kafka_port: 1,
                    amqp_port: 2,
                    http_port: 3,
                    cluster_addr: "h:4".into(),
                    incarnation: 0,
                    fenced: false,
                },
            });
        }
        m
    }

    #[test]
    fn a_silent_node_expires_after_its_session_and_not_before() {
        let m = metadata(&[1, 2, 3]);
        let t0 = Instant::now();
        let s = Duration::from_secs(9);
        let mut l = Liveness::new(s);
        assert!(l.expired(&m, t0 + s * 10).is_empty(), "not the controller");
        l.set_leading(true, t0);
        // A new controller gives everyone a full session.
        assert!(l.expired(&m, t0 + s).is_empty());
        l.heard(1, t0 + Duration::from_secs(5));
        l.heard(2, t0 + Duration::from_secs(8));
        let later = t0 + Duration::from_secs(13);
        assert_eq!(l.expired(&m, later), [3]);
        assert_eq!(l.expired(&m, t0 + Duration::from_secs(16)), [1, 3]);
        // Fenced nodes are not reported again.
        let mut fenced = m.clone();
        fenced.apply(Command::FenceNode { id: 3 });
        assert_eq!(l.expired(&fenced, later), Vec::<NodeId>::new());
    }

    #[test]
    fn losing_and_regaining_control_forgets_old_heartbeats() {
        let m = metadata(&[1]);
        let t0 = Instant::now();
        let s = Duration::from_secs(2);
        let mut l = Liveness::new(s);
        l.set_leading(true, t0);
        l.heard(1, t0);
        l.set_leading(false, t0 + Duration::from_secs(1));
        assert!(l.expired(&m, t0 + Duration::from_secs(10)).is_empty());
        let back = t0 + Duration::from_secs(10);
        l.set_leading(true, back);
        assert!(l.expired(&m, back + Duration::from_secs(1)).is_empty());
        assert_eq!(l.expired(&m, back + Duration::from_secs(3)), [1]);
    }
}
