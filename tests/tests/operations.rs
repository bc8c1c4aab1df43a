//! End-to-end tests of running lbfo as an operator's service: JSON logs for
//! log shippers.

use lbfo_tests::{
    lab::{Host, Lab},
    node::{LbfoNode, StartOptions, basic_config},
};

const VIP_CIDR: &str = "192.0.2.100/24";

/// One node on a segment with a client.
fn lab() -> (Lab, Host) {
    let (lab, _client, mut nodes) =
        Lab::with_client_and_nodes(1).expect("creating the lab (needs root)");
    (lab, nodes.remove(0))
}

#[test]
fn json_logs_are_one_object_per_line() {
    let (mut lab, n1) = lab();
    let options = StartOptions {
        args: vec!["--log-format".into(), "json".into()],
        ..StartOptions::default()
    };
    let node = LbfoNode::start_with(
        &mut lab,
        &n1,
        &basic_config("web", VIP_CIDR, 3000),
        &options,
    )
    .unwrap();
    // Start-up, a transition and shutdown each log.
    node.own("web").unwrap();
    let status = node.stop(&mut lab).unwrap();
    assert!(status.success(), "lbfo exited with {status}");

    let log = node.log_text();
    let mut messages = Vec::new();
    for (n, line) in log.lines().enumerate() {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line {} is not JSON ({e}): {line:?}", n + 1));
        let text = |pointer: &str| entry.pointer(pointer).and_then(|v| v.as_str());
        for field in ["/timestamp", "/level", "/fields/message"] {
            assert!(
                text(field).is_some_and(|v| !v.is_empty()),
                "line {} has no string {field}: {line}",
                n + 1
            );
        }
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&text("/level").unwrap()),
            "line {} has an unknown level: {line}",
            n + 1
        );
        messages.push(text("/fields/message").unwrap().to_string());
    }
    for want in ["XDP attached", "XDP detached; stopped"] {
        assert!(
            messages.iter().any(|m| m.contains(want)),
            "no JSON log line says {want:?}; messages: {messages:#?}"
        );
    }
}
