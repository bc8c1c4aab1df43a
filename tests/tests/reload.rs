//! SIGHUP reloads that cannot be carried out whole are refused before
//! anything changes, end to end: `lbfo run` in a namespace lab.

use std::{net::Ipv4Addr, time::Duration};

use lbfo_tests::{
    lab::{Lab, arping, wait_for},
    node::LbfoNode,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn balanced_vips(backend_net: &str) -> String {
    let mut text = String::new();
    for v in 0..lbfo_common::MAX_BALANCED_VIPS {
        text.push_str(&format!(
            "[[vip]]\nname = \"lb{v}\"\naddress = \"192.0.2.{}/24\"\nmode = \"balance\"\n",
            120 + v
        ));
        for b in 0..256 {
            text.push_str(&format!(
                "[[vip.backend]]\naddress = \"{backend_net}.{b}\"\n"
            ));
        }
    }
    text
}

/// The reload that used to fail half-way: it removes a VIP (which was
/// released and forgotten at once) and then needs more backend ids than
/// are free, because every id is in use or retired by this very reload.
/// Now it is refused whole: the removed VIP is still there, still owned,
/// and XDP still answers for it.
#[test]
fn a_reload_that_cannot_fit_is_refused_before_anything_changes() {
    let (mut lab, client, nodes) = Lab::with_client_and_nodes(1).expect("lab (needs root)");
    let base = "interface = \"eth0\"\nxdp_mode = \"native\"\nlease_ms = 1000\n";
    let web = "[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\n";
    let config = format!("{base}{web}{}", balanced_vips("198.51.100"));
    let node = LbfoNode::start(&mut lab, &nodes[0], &config).unwrap();
    node.own("web").unwrap();
    let before = node.status().unwrap();
    assert!(before.vips[0].owned, "web owned: {:?}", before.vips[0]);
    assert_eq!(before.vips.len(), 17);

    // web goes; every balanced VIP gets 256 new backends (4,096 new ids
    // while all 4,096 are in use or being retired).
    node.reload_with(&format!("{base}{}", balanced_vips("203.0.113")))
        .unwrap();
    wait_for(Duration::from_secs(10), "the reload to be refused", || {
        Ok(node.log_text().contains("reload refused"))
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", node.log_text()));
    let log = node.log_text();
    assert!(
        log.contains("no free backend id"),
        "the refusal says why; log:\n{log}"
    );
    assert!(
        !log.contains("removed by reload"),
        "nothing may be removed by a refused reload; log:\n{log}"
    );

    let after = node.status().unwrap();
    let shape = |s: &lbfo::status::Status| {
        s.vips
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    v.state.clone(),
                    v.owned,
                    v.backends
                        .iter()
                        .map(|b| b.address.clone())
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shape(&after),
        shape(&before),
        "a refused reload leaves every VIP and backend as it was"
    );
    assert!(after.vips[0].lease_left_ms > 0, "web's lease still runs");
    let answers = arping(
        &client.ns,
        &client.ifname,
        VIP,
        2,
        Duration::from_millis(200),
    )
    .unwrap();
    assert_eq!(
        answers,
        vec![nodes[0].mac; answers.len()],
        "XDP still answers for web after the refused reload"
    );
    assert!(!answers.is_empty(), "web must be answered");
    node.stop(&mut lab).unwrap();
}
