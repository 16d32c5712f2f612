//! `/openapi.json` against the running server: every operation it documents is routed (the
//! answer is the handler's, never the router's "no route" or "method not allowed"), and no
//! undocumented method is served on a documented path.

mod common;

use common::Spool;
use serde_json::Value;

/// A value for each path parameter.
fn fill(path: &str) -> String {
    path.replace("{topic}", "t")
        .replace("{partition}", "0")
        .replace("{group}", "g")
        .replace("{member}", "m")
        .replace("{queue}", "q")
}

/// The router's own answers: unknown path, or a method the path does not serve.
fn from_router(body: &str) -> bool {
    body.contains("no route for") || body.contains("is not served on")
}

#[test]
fn every_documented_operation_is_served_and_nothing_else() {
    let spool = Spool::start();
    let (status, body) = spool.http_get("/openapi.json");
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{} paths", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        let methods: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|m| ["get", "post", "put", "patch", "delete"].contains(m))
            .collect();
        for m in &methods {
            let body = (*m != "get" && *m != "delete").then_some("{}");
            let (status, answer) = spool.http(&m.to_uppercase(), &fill(path), body);
            assert!(
                !from_router(&answer),
                "{m} {path}: the router answered {status} {answer}"
            );
            operations += 1;
        }
        if !methods.contains(&"put") {
            let (status, answer) = spool.http("PUT", &fill(path), Some("{}"));
            assert_eq!(status, 405, "PUT {path}: {answer}");
        }
    }
    assert!(operations >= 25, "{operations} operations");
}
