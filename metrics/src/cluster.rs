//! `spool_cluster_*`: this node's view of the cluster and its metadata quorum. Each node
//! reports its own view; only the controller reports `spool_cluster_controller 1`, so a sum over
//! every node's scrape is 1 when the cluster has a controller.

use crate::text::Gauge;

/// One node's view of the cluster, as the broker reports it.
#[derive(Debug, Clone, Default)]
pub struct ClusterSample {
    /// This node is the controller (the quorum's leader).
    pub controller: bool,
    /// This node's role in the quorum: `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    /// The quorum's term (raised at every election).
    pub term: u64,
    /// Registered nodes that are live, and fenced ones.
    pub live_nodes: usize,
    pub fenced_nodes: usize,
    /// The last entry of this node's metadata log, and the last one it applied.
    pub log_index: u64,
    pub applied_index: u64,
}

/// Writes the cluster families.
pub(crate) fn write_cluster_metrics(out: &mut String, c: &ClusterSample) {
    Gauge::new(
        out,
        "spool_cluster_controller",
        "1 when this node is the cluster's controller (the metadata quorum's leader).",
    )
    .sample(&[], c.controller as i64);
    Gauge::new(
        out,
        "spool_cluster_quorum_role",
        "This node's role in the metadata quorum (the labelled role is 1).",
    )
    .sample(&[("role", &c.role)], 1);
    Gauge::new(
        out,
        "spool_cluster_quorum_term",
        "The metadata quorum's term; it rises at every election.",
    )
    .sample(&[], c.term as i64);
    let mut nodes = Gauge::new(
        out,
        "spool_cluster_nodes",
        "Registered nodes, live or fenced, as this node knows them.",
    );
    nodes.sample(&[("state", &"live")], c.live_nodes as i64);
    nodes.sample(&[("state", &"fenced")], c.fenced_nodes as i64);
    Gauge::new(
        out,
        "spool_cluster_metadata_applied_index",
        "The last metadata log entry this node has applied.",
    )
    .sample(&[], c.applied_index as i64);
    Gauge::new(
        out,
        "spool_cluster_metadata_lag",
        "Metadata log entries this node holds and has not applied yet.",
    )
    .sample(&[], c.log_index.saturating_sub(c.applied_index) as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_series_each_and_the_lag_never_negative() {
        let mut out = String::new();
        let c = ClusterSample {
            controller: true,
            role: "leader".into(),
            term: 3,
            live_nodes: 2,
            fenced_nodes: 1,
            log_index: 10,
            applied_index: 12,
        };
        write_cluster_metrics(&mut out, &c);
        for line in [
            "spool_cluster_controller 1",
            "spool_cluster_quorum_role{role=\"leader\"} 1",
            "spool_cluster_nodes{state=\"fenced\"} 1",
            "spool_cluster_metadata_lag 0",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
        }
    }
}
