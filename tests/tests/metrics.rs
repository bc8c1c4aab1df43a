//! Metrics end to end: a real Prometheus (Debian's) scrapes an lbfo pair in
//! the lab and is asked through its HTTP API; `promtool check metrics` lints
//! the raw exposition; the Grafana dashboard's queries name only metrics a
//! scrape has.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use lbfo_tests::{
    lab::{Host, Lab, ip, netns_exec, run, wait_for},
    node::{LbfoNode, vrrp_config},
    prometheus::Prometheus,
    rfc5798,
};

const ADVERT: Duration = Duration::from_millis(100);
const PORT: u16 = 9655;
/// Scheduling on a loaded 2-core machine, between the timer and the take.
const SLACK: Duration = Duration::from_millis(50);

fn endpoint(host: &Host) -> SocketAddr {
    SocketAddr::new(host.addr.into(), PORT)
}

/// Each node: the elected VIP `web`, and a balanced VIP `lb` (not owned)
/// whose backend check fails, so check and backend series exist.
fn config(host: &Host, priority: u8) -> String {
    let lb = "[[vip]]\nname = \"lb\"\naddress = \"192.0.2.110/24\"\nmode = \"balance\"\n[[vip.backend]]\naddress = \"192.0.2.41\"\n[[vip.backend.check]]\nkind = \"tcp\"\naddress = \"127.0.0.1:9\"\ninterval_ms = 200\ntimeout_ms = 100\n";
    let elected = vrrp_config("192.0.2.100/24", 51, priority, ADVERT, "");
    // [metrics] goes before the first [[vip]] table.
    let (head, vips) = elected.split_at(elected.find("[[vip]]").expect("a vip table"));
    format!(
        "{head}[metrics]\nlisten = \"{}\"\n\n{vips}\n{lb}",
        endpoint(host)
    )
}

fn scrape(client: &Host, host: &Host) -> String {
    let out = run(netns_exec(&client.ns, "curl")
        .args(["-sf", "--max-time", "2"])
        .arg(format!("http://{}/metrics", endpoint(host))))
    .expect("scraping lbfo");
    String::from_utf8(out.stdout).expect("the exposition is text")
}

#[test]
fn prometheus_sees_the_pair_and_a_link_down_failover() {
    let (mut lab, client, nodes) = Lab::with_client_and_nodes(2).expect("lab (needs root)");
    let n1 = LbfoNode::start(&mut lab, &nodes[0], &config(&nodes[0], 150)).unwrap();
    n1.wait_state("web", "master", Duration::from_secs(3))
        .unwrap();
    let n2 = LbfoNode::start(&mut lab, &nodes[1], &config(&nodes[1], 100)).unwrap();
    n2.wait_state("web", "backup", Duration::from_secs(3))
        .unwrap();
    let prometheus = Prometheus::start(
        &mut lab,
        &client,
        &[endpoint(&nodes[0]), endpoint(&nodes[1])],
    )
    .unwrap();
    let (i1, i2) = (
        endpoint(&nodes[0]).to_string(),
        endpoint(&nodes[1]).to_string(),
    );

    wait_for(
        Duration::from_secs(10),
        "Prometheus to see Master and Backup",
        || {
            Ok(
                prometheus.value("lbfo_vip_state{vip=\"web\"}", &i1)? == Some(2.0)
                    && prometheus.value("lbfo_vip_state{vip=\"web\"}", &i2)? == Some(1.0),
            )
        },
    )
    .unwrap_or_else(|e| panic!("{e}; prometheus log:\n{}", prometheus.log_text()));

    // The Master's link goes down right after one of its advertisements
    // reached n2: n2 waits its Master_Down_Interval from that advertisement.
    ip(&nodes[0].ns, &["link", "set", "eth0", "down"]).unwrap();
    let mdi = rfc5798::master_down_interval(ADVERT, 100);
    n2.wait_state("web", "master", mdi + Duration::from_secs(1))
        .unwrap();

    let transitions =
        "lbfo_vrrp_master_transitions_total{vip=\"web\",reason=\"master_no_response\"}";
    let count = "lbfo_failover_seconds_count{vip=\"web\",reason=\"master_no_response\"}";
    wait_for(
        Duration::from_secs(10),
        "Prometheus to see the takeover",
        || {
            Ok(prometheus.value(transitions, &i2)? == Some(1.0)
                && prometheus.value(count, &i2)? == Some(1.0))
        },
    )
    .unwrap_or_else(|e| panic!("{e}; n2 log:\n{}", n2.log_text()));
    // One observation: its sum is its value. It runs from the last
    // advertisement n2 heard from n1 to XDP answering with the first
    // gratuitous ARP out: Master_Down_Interval, plus the take itself.
    let took = prometheus
        .value(
            "lbfo_failover_seconds_sum{vip=\"web\",reason=\"master_no_response\"}",
            &i2,
        )
        .unwrap()
        .expect("a failover observation");
    let took = Duration::from_secs_f64(took);
    eprintln!("failover observed: {took:?} (Master_Down_Interval {mdi:?})");
    assert!(
        took >= mdi.saturating_sub(Duration::from_millis(1)) && took <= mdi + SLACK,
        "the failover took {took:?}; its timers give {mdi:?} (+ {SLACK:?} slack)"
    );
    let status = n2.status().unwrap();
    let last = status.vips[0]
        .last_failover
        .as_ref()
        .expect("status shows the last takeover");
    assert_eq!(last.reason, "master_no_response");
    assert!(
        (last.took_ms - took.as_secs_f64() * 1000.0).abs() < 0.01,
        "status and metrics agree: {last:?} vs {took:?}"
    );

    // The takeover is logged once, with its reason and its duration.
    let log = n2.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("backup -> master"))
        .collect();
    assert!(
        lines.len() == 1 && lines[0].contains("master_no_response") && lines[0].contains("took_ms"),
        "one log line for the takeover, with reason and time: {lines:?}"
    );

    // The raw exposition passes Prometheus's own linter.
    let exposition = scrape(&client, &nodes[1]);
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running promtool");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), exposition.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every metric the dashboard queries is in the scrape.
    let scraped: BTreeSet<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../dist/grafana/lbfo.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queried.extend(metric_names(expr));
        }
    }
    assert!(queried.len() > 15, "the dashboard queries {queried:?}");
    let missing: Vec<&String> = queried
        .iter()
        .filter(|m| !scraped.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no scrape has: {missing:?}"
    );
    ip(&nodes[0].ns, &["link", "set", "eth0", "up"]).unwrap();
    drop(n1);
}

/// The metric names in a PromQL expression: identifiers that start with
/// `lbfo_` or `process_`.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lbfo_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}
