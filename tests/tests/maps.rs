//! The XDP maps are sized from the configuration at start-up: what the
//! kernel created, as `bpftool` reports it, matches the config, and a
//! reload that would need bigger maps is refused with the running ones
//! left as they are. `lbfo run` in a namespace lab.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use lbfo_tests::{
    bpftool::program_maps,
    lab::{Lab, wait_for},
    node::LbfoNode,
};

const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);

const ELECTED: &str = "interface = \"eth0\"\nxdp_mode = \"native\"\n\n[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\nvrid = 51\npriority = 150\nadvert_interval_ms = 100\n";

const BALANCED: &str = "[[vip]]\nname = \"lb\"\naddress = \"192.0.2.110/24\"\nmode = \"balance\"\n[[vip.backend]]\naddress = \"198.51.100.1\"\n[[vip.backend]]\naddress = \"198.51.100.2\"\n[[vip.backend]]\naddress = \"198.51.100.3\"\n";

/// Entries of each of the daemon's maps, by the kernel's map name.
fn sizes(node: &LbfoNode) -> BTreeMap<String, u64> {
    let prog_id = node.status().expect("status").xdp_prog_id;
    program_maps(prog_id)
        .expect("bpftool map show")
        .into_iter()
        .map(|m| (m.name, m.max_entries))
        .collect()
}

fn expected(maglev: u64, backends: u64, conntrack: u64) -> BTreeMap<String, u64> {
    [
        ("VIPS", 256),
        ("VIPS6", 256),
        ("VIP_COUNTERS", 257),
        ("MAGLEV", maglev),
        ("BACKENDS", backends),
        // The kernel keeps 15 characters of a map's name.
        ("BACKEND_COUNTER", backends),
        ("CONNTRACK", conntrack),
    ]
    .into_iter()
    .map(|(name, n)| (name.to_string(), n))
    .collect()
}

/// One elected VIP, no balancing: no Maglev tables, no backends, no
/// connection table (one entry each, the least the kernel allows), and a
/// reload that adds a balanced VIP is refused in one line, changing nothing.
#[test]
fn without_balancing_the_maps_hold_only_vips_and_a_reload_needing_tables_is_refused() {
    let mut lab = Lab::new().expect("lab (needs root)");
    let host = lab.add_host("n1", NODE).unwrap();
    let node = LbfoNode::start(&mut lab, &host, ELECTED).unwrap();
    node.wait_state("web", "master", Duration::from_secs(5))
        .unwrap();
    let before = sizes(&node);
    assert_eq!(before, expected(1, 1, 1), "maps without balancing");
    let bytes: u64 = program_maps(node.status().unwrap().xdp_prog_id)
        .unwrap()
        .iter()
        .map(|m| m.bytes_memlock)
        .sum();
    // VIPS, VIPS6 and VIP_COUNTERS only (about 110 KiB on two CPUs); everything
    // preallocated at its largest was 38 MiB.
    assert!(
        bytes < 1 << 20,
        "map memory without balancing: {bytes} bytes, expected under 1 MiB"
    );

    node.reload_with(&format!("{ELECTED}{BALANCED}")).unwrap();
    wait_for(Duration::from_secs(10), "the reload to be refused", || {
        Ok(node.log_text().contains("reload refused"))
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", node.log_text()));
    let log = node.log_text();
    let refusal = log
        .lines()
        .find(|l| l.contains("reload refused"))
        .expect("found above");
    assert!(
        refusal.contains(
            "needs a restart: the maps were sized for 0 balanced VIPs at start-up, the new configuration has 1"
        ),
        "the refusal says the maps are too small, in one line: {refusal}"
    );
    let status = node.status().unwrap();
    assert_eq!(
        status
            .vips
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        ["web"],
        "the refused reload added no VIP"
    );
    assert_eq!(status.vips[0].state, "master", "web stays Master");
    assert_eq!(sizes(&node), before, "the maps are the ones from start-up");
    node.stop(&mut lab).unwrap();
}

/// One balanced VIP with three backends beside the elected one: tables for
/// it plus the default headroom of 2, its backends plus 256, and the
/// configured connection table.
#[test]
fn with_balancing_the_maps_fit_the_balanced_vips_and_backends_configured() {
    let mut lab = Lab::new().expect("lab (needs root)");
    let host = lab.add_host("n1", NODE).unwrap();
    let config = ELECTED.replace(
        "xdp_mode = \"native\"\n",
        "xdp_mode = \"native\"\nconntrack_entries = 8192\n",
    );
    let node = LbfoNode::start(&mut lab, &host, &format!("{config}{BALANCED}")).unwrap();
    assert_eq!(
        sizes(&node),
        expected(3 * 2 * 65_537, 3 + 256, 8192),
        "maps with one balanced VIP of three backends"
    );

    for map in program_maps(node.status().unwrap().xdp_prog_id).unwrap() {
        println!("{map:?}");
    }

    // The same with the headroom set: exactly what is asked for.
    node.stop(&mut lab).unwrap();
    let exact = config.replace(
        "conntrack_entries = 8192\n",
        "conntrack_entries = 1024\nbalanced_vip_headroom = 0\nbackend_headroom = 0\n",
    );
    let node = LbfoNode::start(&mut lab, &host, &format!("{exact}{BALANCED}")).unwrap();
    assert_eq!(
        sizes(&node),
        expected(2 * 65_537, 3, 1024),
        "maps with no headroom"
    );
    node.stop(&mut lab).unwrap();
}
