//! `spool cluster status`: the cluster as one node sees it (its `GET /cluster`), as a table.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;

/// `spool cluster ...`.
#[derive(Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Nodes, their listeners and state, the controller, and how far the asked node has applied
    /// the metadata.
    Status {
        /// The HTTP listener of any node.
        #[arg(long, default_value = "127.0.0.1:8080", env = "SPOOL_HTTP_ADDR")]
        http_addr: String,
        /// Print the JSON as the node answered it.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `spool cluster` command.
pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    match args.command {
        ClusterCommand::Status { http_addr, json } => {
            let view = get_json(&http_addr, "/cluster")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", render(&view));
            }
            Ok(())
        }
    }
}

/// `GET path` on a node's HTTP listener; its JSON body.
fn get_json(addr: &str, path: &str) -> anyhow::Result<Value> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").context("no HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{addr}{path}: {}", head.lines().next().unwrap_or(""));
    }
    serde_json::from_str(body).with_context(|| format!("{addr}{path} did not answer JSON"))
}

/// The status as a few lines and a table.
fn render(v: &Value) -> String {
    let controller = v["controller"].as_u64();
    let mut out = format!(
        "cluster {}  controller: {}  (asked node {}: {}, applied {} of {})\n",
        v["cluster_id"].as_str().unwrap_or("?"),
        controller.map_or("none".to_string(), |c| format!("node {c}")),
        v["node_id"],
        v["role"].as_str().unwrap_or("?"),
        v["last_applied_index"],
        v["last_log_index"],
    );
    out += &format!(
        "{:<6}{:<18}{:<7}{:<7}{:<7}{:<24}{:<13}{}\n",
        "NODE", "HOST", "KAFKA", "AMQP", "HTTP", "INTER-NODE", "INCARNATION", "STATE"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let state = if n["fenced"].as_bool() == Some(true) {
            "fenced"
        } else if n["id"].as_u64() == controller {
            "controller"
        } else {
            "live"
        };
        let voter = if n["voter"].as_bool() == Some(true) {
            ", voter"
        } else {
            ""
        };
        out += &format!(
            "{:<6}{:<18}{:<7}{:<7}{:<7}{:<24}{:<13}{}{}\n",
            n["id"],
            n["host"].as_str().unwrap_or(""),
            n["kafka_port"],
            n["amqp_port"],
            n["http_port"],
            n["cluster_addr"]
                .as_str()
                .filter(|a| !a.is_empty())
                .unwrap_or("-"),
            n["incarnation"],
            state,
            voter
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_the_controller_and_fenced_nodes() {
        let v = serde_json::json!({
            "cluster_id": "c", "controller": 2, "node_id": 1, "role": "follower",
            "last_applied_index": 7, "last_log_index": 7,
            "nodes": [
                {"id": 1, "host": "h1", "kafka_port": 9092, "amqp_port": 5672, "http_port": 8080,
                 "cluster_addr": "h1:9093", "incarnation": 1, "fenced": false, "voter": true},
                {"id": 2, "host": "h2", "kafka_port": 9092, "amqp_port": 5672, "http_port": 8080,
                 "cluster_addr": "h2:9093", "incarnation": 3, "fenced": false, "voter": true},
                {"id": 3, "host": "h3", "kafka_port": 9092, "amqp_port": 5672, "http_port": 8080,
                 "cluster_addr": "h3:9093", "incarnation": 1, "fenced": true, "voter": true}
            ]
        });
        let text = render(&v);
        assert!(
            text.starts_with("cluster c  controller: node 2  (asked node 1: follower"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[3].contains("controller, voter"), "{text}");
        assert!(lines[4].contains("fenced"), "{text}");
    }
}
