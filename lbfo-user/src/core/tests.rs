//! Scenario tables for the core: rows of (time, input) in, the effects
//! expected out, each written as one short line (see [`line`]). No root, no
//! sockets, no sleeps: time is an argument.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use super::*;
use crate::vrrp::{Advertisement, Auth, Version};

const PRIMARY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const PRIMARY6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x11);
/// The node's VRRP sources in both families.
const SOURCES: Sources = Sources {
    ipv4: Some(PRIMARY),
    ipv6: Some(PRIMARY6),
};
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 12));

fn config(text: &str) -> Config {
    Config::parse(
        &format!("interface = \"eth0\"\nlease_ms = 900\n{text}"),
        Path::new("test.toml"),
    )
    .expect("test config is valid")
}

/// A node with its maps sized for `config`, as the daemon starts it.
fn start(config: Config, sources: Sources) -> Result<Node, PlanError> {
    let capacity = Capacity::for_config(&config);
    Node::new(config, true, sources, capacity)
}

fn node(text: &str) -> Node {
    let mut node = start(config(text), SOURCES).expect("plan");
    node.initial_effects();
    node
}

/// One effect as a line of the tables.
fn line(effect: &Effect) -> String {
    let owned = |e: &MapEntry| if e.owned { "owned" } else { "not-owned" };
    let route = |e: &MapEntry| if e.route { " route" } else { "" };
    let all = |addresses: &[VipAddress]| {
        let all: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        all.join(",")
    };
    match effect {
        Effect::Take {
            addresses,
            lease,
            entry,
            ..
        } => format!("take {} lease {lease:?}{}", all(addresses), route(entry)),
        Effect::Release { addresses, entry } => {
            format!(
                "release {} {}{}",
                all(addresses),
                owned(entry),
                route(entry)
            )
        }
        Effect::Write {
            addresses,
            entry,
            lease,
        } => match lease {
            Some(l) => format!(
                "write {} {} gen {} lease {l:?}",
                all(addresses),
                owned(entry),
                entry.table_generation
            ),
            None => format!(
                "write {} {} gen {}",
                all(addresses),
                owned(entry),
                entry.table_generation
            ),
        },
        Effect::Forget { addresses } => format!("forget {}", all(addresses)),
        Effect::ResetCounters { vip_id } => format!("reset counters {vip_id}"),
        Effect::Announce { addresses, .. } => format!("announce {}", all(addresses)),
        Effect::PublishTable(t) => {
            let mut ids: Vec<u32> = t.table.clone();
            ids.sort_unstable();
            ids.dedup();
            format!(
                "publish slot {} gen {} backends {ids:?}",
                t.table_slot, t.generation
            )
        }
        Effect::ClearBackends(ids) => {
            let mut ids = ids.clone();
            ids.sort_unstable();
            format!("clear backends {ids:?}")
        }
        Effect::SendAdvert { advert, .. } => {
            format!("advert vrid {} priority {}", advert.vrid, advert.priority)
        }
        Effect::Solicit(addrs) => format!("solicit {addrs:?}"),
        // The script's file name, then its arguments.
        Effect::Notify { script, args } => {
            let name = script.file_name().unwrap().to_string_lossy();
            [name.as_ref()]
                .into_iter()
                .chain(args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        }
        Effect::Reply(Response::Done { message }) => format!("done: {message}"),
        Effect::Reply(Response::Error { message }) => format!("error: {message}"),
        Effect::Reply(Response::Status(_)) => "status".into(),
        Effect::Stopped => "stopped".into(),
    }
}

/// Feeds each row's input at its time (ms) and checks its effects, then
/// the phase of the named VIP if the row gives one.
fn play(node: &mut Node, rows: &[(u64, Input, &[&str])]) {
    for (at, input, expected) in rows {
        let shown = format!("{input:?}");
        let effects: Vec<String> = node
            .handle(Duration::from_millis(*at), input.clone())
            .iter()
            .map(line)
            .collect();
        assert_eq!(
            effects, *expected,
            "at {at} ms, input {shown}: effects differ (left: seen, right: expected)"
        );
    }
}

fn phase(node: &Node, name: &str) -> Phase {
    node.vips()
        .iter()
        .find(|v| v.name() == name)
        .expect("VIP")
        .phase()
}

fn check(vip: &str, index: usize, healthy: bool) -> Input {
    Input::Check {
        key: CheckKey {
            vip: vip.into(),
            backend: None,
            index,
        },
        healthy,
        why: format!("check {index} {}", if healthy { "passes" } else { "fails" }),
    }
}

fn advert(vrid: u8, priority: u8, interval_cs: u16) -> Input {
    Input::Advert {
        from: PEER,
        advert: Advertisement {
            version: Version::V3,
            auth: Auth::None,
            vrid,
            priority,
            max_advert_interval_cs: interval_cs,
            addresses: vec![Ipv4Addr::new(192, 0, 2, 100).into()],
        },
    }
}

const OPERATOR_VIP: &str = "[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\n";

#[test]
fn operator_own_and_release() {
    let mut n = owning_web(OPERATOR_VIP);
    play(
        &mut n,
        &[
            (
                20,
                Input::Own("192.0.2.100".into()),
                &["done: web 192.0.2.100/24 is already owned by this node"],
            ),
            (
                30,
                Input::RenewLeases,
                &["write 192.0.2.100/24 owned gen 0 lease 900ms"],
            ),
            (
                40,
                Input::RefreshAnnouncements,
                &["announce 192.0.2.100/24"],
            ),
            (
                50,
                Input::Release("web".into()),
                &[
                    "release 192.0.2.100/24 not-owned",
                    "done: web 192.0.2.100/24 released",
                ],
            ),
            (
                60,
                Input::Release("web".into()),
                &["done: web 192.0.2.100/24 was not owned by this node"],
            ),
            (70, Input::RenewLeases, &[]),
            (
                80,
                Input::Own("db".into()),
                &["error: no VIP named or addressed \"db\" in the config"],
            ),
        ],
    );
    assert_eq!(phase(&n, "web"), Phase::Standby);
    assert_eq!(n.vips()[0].transitions.get(&Reason::Operator), Some(&1));
}

/// `text`'s node after start-up with its operator VIP `web` (192.0.2.100)
/// owned at 10 ms.
fn owning_web(text: &str) -> Node {
    let mut n = node(text);
    play(
        &mut n,
        &[
            (0, Input::Start, &[]),
            (
                10,
                Input::Own("web".into()),
                &[
                    "take 192.0.2.100/24 lease 900ms",
                    "done: web 192.0.2.100/24 is now owned by this node",
                ],
            ),
        ],
    );
    n
}

#[test]
fn a_failed_take_leaves_the_vip_unowned_and_unwanted() {
    let mut n = owning_web(OPERATOR_VIP);
    play(
        &mut n,
        &[
            (
                11,
                Input::TakeFailed {
                    address: Ipv4Addr::new(192, 0, 2, 100).into(),
                    error: "netlink said no".into(),
                },
                &[],
            ),
            // Unwanted now: a recovering check must not take it behind the
            // operator's back.
            (20, Input::RenewLeases, &[]),
        ],
    );
    assert_eq!(phase(&n, "web"), Phase::Standby);
    assert!(!n.vips()[0].operator_wants);
}

const CHECKED_VIP: &str = "[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\nnotify = \"/usr/local/bin/notify\"\n[[vip.check]]\nkind = \"tcp\"\naddress = \"127.0.0.1:80\"\n";

#[test]
fn check_fault_and_recovery_of_an_operator_vip() {
    let mut n = node(CHECKED_VIP);
    play(
        &mut n,
        &[
            // Unproven checks count as failing.
            (0, Input::Start, &["notify web initialize fault"]),
            (
                10,
                Input::Own("web".into()),
                &[
                    "done: web is in fault (fault: health checks not passed yet); it will be owned as soon as its checks pass",
                ],
            ),
            (
                20,
                check("web", 0, true),
                &["take 192.0.2.100/24 lease 900ms", "notify web fault owner"],
            ),
            (
                30,
                check("web", 0, false),
                &["release 192.0.2.100/24 not-owned", "notify web owner fault"],
            ),
            (40, check("web", 0, false), &[]),
        ],
    );
    assert_eq!(n.vips()[0].reason, "fault: check 0 fails");
}

#[test]
fn link_loss_and_return() {
    let mut n = owning_web(OPERATOR_VIP);
    play(
        &mut n,
        &[
            (
                20,
                Input::Link { up: false },
                &["release 192.0.2.100/24 not-owned"],
            ),
            (25, Input::Link { up: false }, &[]),
            (
                30,
                Input::Link { up: true },
                &["take 192.0.2.100/24 lease 900ms"],
            ),
        ],
    );
    assert_eq!(phase(&n, "web"), Phase::Owner);
}

fn elected(priority: u8, extra: &str) -> String {
    format!(
        "[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\nvrid = 51\npriority = {priority}\nadvert_interval_ms = 100\n{extra}"
    )
}

/// An elected VIP at priority 150 alone on its LAN: Backup at 0 ms,
/// Master when its Master_Down_Interval (341.4 ms) runs out.
fn master_at_342() -> Node {
    let mut n = node(&elected(150, ""));
    play(
        &mut n,
        &[
            (0, Input::Start, &[]),
            (
                342,
                Input::Timer,
                &[
                    "take 192.0.2.100/24 lease 341.40625ms",
                    "advert vrid 51 priority 150",
                    "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
                ],
            ),
        ],
    );
    n
}

#[test]
fn vrrp_backup_to_master_and_back() {
    // priority 150: Skew_Time = (256-150)/256 * 100 ms = 41.4 ms,
    // Master_Down_Interval = 341.4 ms.
    let mut n = node(&elected(150, ""));
    play(
        &mut n,
        &[
            (0, Input::Start, &[]),
            (100, Input::Timer, &[]),
            (
                342,
                Input::Timer,
                &[
                    "take 192.0.2.100/24 lease 341.40625ms",
                    "advert vrid 51 priority 150",
                    "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
                ],
            ),
            (
                442,
                Input::Timer,
                &[
                    "advert vrid 51 priority 150",
                    "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
                ],
            ),
            // A higher priority takes over: we step down, and send one last
            // advertisement so the winner knows to announce itself.
            (
                450,
                advert(51, 200, 10),
                &[
                    "release 192.0.2.100/24 not-owned",
                    "advert vrid 51 priority 150",
                ],
            ),
            (500, advert(51, 200, 10), &[]),
            // It stops: priority 0, we take over after Skew_Time.
            (550, advert(51, 0, 10), &[]),
            (
                592,
                Input::Timer,
                &[
                    "take 192.0.2.100/24 lease 341.40625ms",
                    "advert vrid 51 priority 150",
                    "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
                ],
            ),
            // A lower-priority Master: split brain; we assert ourselves at once.
            (
                600,
                advert(51, 100, 10),
                &[
                    "advert vrid 51 priority 150",
                    "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
                    "announce 192.0.2.100/24",
                ],
            ),
        ],
    );
    assert_eq!(phase(&n, "web"), Phase::Master);
    let vip = &n.vips()[0];
    let counters = &vip.election.as_ref().unwrap().counters;
    assert_eq!((counters.became_master, counters.adverts_received), (2, 4));
    assert_eq!(counters.priority_zero_received, 1);
    // Why each takeover happened, and when it began: the first when the
    // Backup's timer started (0 ms), the second at the priority 0 (550 ms).
    assert_eq!(
        vip.transitions
            .iter()
            .map(|(r, c)| (r.as_str(), *c))
            .collect::<Vec<_>>(),
        [("master_no_response", 1), ("shutdown", 1)]
    );
    assert_eq!(
        vip.pending_failover,
        Some((Duration::from_millis(550), Reason::Shutdown))
    );
    play(
        &mut n,
        &[(
            593,
            Input::TookOver {
                address: Ipv4Addr::new(192, 0, 2, 100).into(),
                took: Duration::from_millis(43),
            },
            &[],
        )],
    );
    assert_eq!(
        n.vips()[0].last_failover,
        Some((Reason::Shutdown, Duration::from_millis(43)))
    );
}

#[test]
fn a_weighted_check_lowers_the_advertised_priority_and_a_plain_one_faults() {
    let checks = "[[vip.check]]\nkind = \"tcp\"\naddress = \"127.0.0.1:80\"\nweight = -60\n[[vip.check]]\nkind = \"tcp\"\naddress = \"127.0.0.1:81\"\n";
    let mut n = node(&elected(150, checks));
    play(
        &mut n,
        &[
            // Both unproven: the plain check's failure is a fault.
            (0, Input::Start, &[]),
            // Only the weighted one fails: Backup, priority 150 - 60 = 90, so
            // Master_Down_Interval = 300 + (256 - 90) / 256 * 100 = 364.84 ms.
            (10, check("web", 1, true), &[]),
            (370, Input::Timer, &[]),
            (
                375,
                Input::Timer,
                &[
                    "take 192.0.2.100/24 lease 364.84375ms",
                    "advert vrid 51 priority 90",
                    "write 192.0.2.100/24 owned gen 0 lease 364.84375ms",
                ],
            ),
            // The new priority goes out with the next advertisement.
            (450, check("web", 0, true), &[]),
            (
                475,
                Input::Timer,
                &[
                    "advert vrid 51 priority 150",
                    "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
                ],
            ),
            // A plain check fails: priority 0 so a Backup takes over at once.
            (
                500,
                check("web", 1, false),
                &[
                    "advert vrid 51 priority 0",
                    "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
                    "release 192.0.2.100/24 not-owned",
                ],
            ),
        ],
    );
    assert_eq!(phase(&n, "web"), Phase::Fault);
}

#[test]
fn a_positive_weight_raises_the_priority_while_its_check_passes() {
    // keepalived's "add 2 points of prio if OK", beside a failing -30.
    let checks = "[[vip.check]]\nkind = \"tcp\"\naddress = \"127.0.0.1:80\"\nweight = 2\n[[vip.check]]\nkind = \"tcp\"\naddress = \"127.0.0.1:81\"\nweight = -30\n";
    let mut n = node(&elected(253, checks));
    play(
        &mut n,
        &[
            // Unproven: the +2 does not count, the -30 does: 223, so
            // Master_Down_Interval = 300 + (256 - 223) / 256 * 100 ms.
            (0, Input::Start, &[]),
            (
                313,
                Input::Timer,
                &[
                    "take 192.0.2.100/24 lease 312.890625ms",
                    "advert vrid 51 priority 223",
                    "write 192.0.2.100/24 owned gen 0 lease 312.890625ms",
                ],
            ),
            (410, check("web", 0, true), &[]),
            (
                413,
                Input::Timer,
                &[
                    "advert vrid 51 priority 225",
                    "write 192.0.2.100/24 owned gen 0 lease 312.109375ms",
                ],
            ),
            // Both pass: 253 + 2 is kept at 254.
            (510, check("web", 1, true), &[]),
            (
                513,
                Input::Timer,
                &[
                    "advert vrid 51 priority 254",
                    "write 192.0.2.100/24 owned gen 0 lease 300.78125ms",
                ],
            ),
            // The +2 check fails: back to 253.
            (610, check("web", 0, false), &[]),
            (
                613,
                Input::Timer,
                &[
                    "advert vrid 51 priority 253",
                    "write 192.0.2.100/24 owned gen 0 lease 301.171875ms",
                ],
            ),
        ],
    );
}

#[test]
fn several_addresses_move_together_in_one_advertisement() {
    let mut n = node(
        "[[vip]]\nname = \"web\"\naddresses = [\"192.0.2.100/24\", \"192.0.2.101/32\"]\nvrid = 51\npriority = 150\nadvert_interval_ms = 100\n",
    );
    let effects = n.handle(Duration::ZERO, Input::Start);
    assert!(effects.is_empty(), "{effects:?}");
    let effects = n.handle(Duration::from_millis(342), Input::Timer);
    assert_eq!(
        effects.iter().map(line).collect::<Vec<_>>(),
        [
            "take 192.0.2.100/24,192.0.2.101/32 lease 341.40625ms",
            "advert vrid 51 priority 150",
            "write 192.0.2.100/24,192.0.2.101/32 owned gen 0 lease 341.40625ms",
        ]
    );
    let Some(Effect::SendAdvert { advert, .. }) = effects.get(1) else {
        panic!("expected an advertisement second, got {effects:?}");
    };
    assert_eq!(
        advert.addresses,
        [Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 101)],
        "one advertisement lists every address, in the configured order"
    );
    // A higher-priority Master: both go at once.
    play(
        &mut n,
        &[(
            400,
            Input::Advert {
                from: PEER,
                advert: Advertisement {
                    priority: 200,
                    ..advert.clone()
                },
            },
            &[
                "release 192.0.2.100/24,192.0.2.101/32 not-owned",
                "advert vrid 51 priority 150",
            ],
        )],
    );
    // An advertisement with one of the two addresses is not ours.
    let before = n.rejected()["address_mismatch"];
    n.handle(
        Duration::from_millis(500),
        Input::Advert {
            from: PEER,
            advert: Advertisement {
                priority: 200,
                addresses: vec![Ipv4Addr::new(192, 0, 2, 100).into()],
                ..advert.clone()
            },
        },
    );
    assert_eq!(n.rejected()["address_mismatch"], before + 1);
}

#[test]
fn shutdown_keeps_the_vip_until_the_successor_advertises() {
    let mut n = master_at_342();
    play(
        &mut n,
        &[
            // Priority 0, and the lease pushed forward to cover the wait.
            (
                400,
                Input::Shutdown,
                &[
                    "advert vrid 51 priority 0",
                    "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
                ],
            ),
            (
                420,
                Input::Own("web".into()),
                &["error: lbfo is shutting down"],
            ),
            (
                430,
                advert(51, 100, 10),
                &["release 192.0.2.100/24 not-owned", "stopped"],
            ),
            (500, Input::Timer, &[]),
        ],
    );
    assert!(n.stopped());
}

/// keepalived's per-state scripts: each run as given, on its own state.
const STATE_NOTIFIES: &str = "notify_master = [\"/usr/local/bin/on-master\", \"web\"]\nnotify_backup = [\"/usr/local/bin/on-backup\"]\nnotify_fault = [\"/usr/local/bin/on-fault\", \"-q\"]\nnotify_stop = [\"/usr/local/bin/on-stop\"]\n";

#[test]
fn per_state_notify_commands_run_on_their_states() {
    let mut n = node(&elected(150, STATE_NOTIFIES));
    play(
        &mut n,
        &[
            (0, Input::Start, &["on-backup"]),
            (
                342,
                Input::Timer,
                &[
                    "take 192.0.2.100/24 lease 341.40625ms",
                    "advert vrid 51 priority 150",
                    "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
                    "on-master web",
                ],
            ),
            // The link goes: priority 0 sent, the VIP released, fault.
            (
                350,
                Input::Link { up: false },
                &[
                    "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
                    "release 192.0.2.100/24 not-owned",
                    "on-fault -q",
                ],
            ),
            (360, Input::Link { up: true }, &["on-backup"]),
            (
                702,
                Input::Timer,
                &[
                    "take 192.0.2.100/24 lease 341.40625ms",
                    "advert vrid 51 priority 150",
                    "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
                    "on-master web",
                ],
            ),
            // A graceful stop runs notify_stop (not notify_backup) as the
            // election stops; the VIP is held until the successor advertises.
            (
                750,
                Input::Shutdown,
                &[
                    "advert vrid 51 priority 0",
                    "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
                    "on-stop",
                ],
            ),
            (
                760,
                advert(51, 100, 10),
                &["release 192.0.2.100/24 not-owned", "stopped"],
            ),
        ],
    );
}

#[test]
fn shutdown_without_a_successor_releases_at_the_deadline() {
    let mut n = master_at_342();
    play(
        &mut n,
        &[(
            400,
            Input::Shutdown,
            &[
                "advert vrid 51 priority 0",
                "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
            ],
        )],
    );
    // One advertisement interval plus the margin.
    assert_eq!(
        n.next_deadline(),
        Some(Duration::from_millis(400) + Duration::from_millis(100) + HANDOVER_MARGIN)
    );
    play(
        &mut n,
        &[(
            600,
            Input::Timer,
            &["release 192.0.2.100/24 not-owned", "stopped"],
        )],
    );
}

const BALANCED: &str = "[[vip]]\nname = \"lb\"\naddress = \"192.0.2.100/24\"\nmode = \"balance\"\n[[vip.backend]]\naddress = \"198.51.100.1\"\n[[vip.backend]]\naddress = \"198.51.100.2\"\n";

fn macs(addrs: &[(u8, u8)]) -> Input {
    Input::Neighbours(
        addrs
            .iter()
            .map(|&(last, mac)| {
                (
                    Ipv4Addr::new(198, 51, 100, last).into(),
                    [2, 0, 0, 0, 0, mac],
                )
            })
            .collect(),
    )
}

#[test]
fn backends_take_flows_once_their_macs_are_known_and_drain_stops_new_ones() {
    let mut n = start(config(BALANCED), Sources::default()).unwrap();
    let initial: Vec<String> = n.initial_effects().iter().map(line).collect();
    assert_eq!(
        initial,
        [
            format!("publish slot 0 gen 1 backends [{}]", u32::MAX),
            "write 192.0.2.100/24 not-owned gen 1".into()
        ]
    );
    play(
        &mut n,
        &[
            (0, Input::Start, &[]),
            (
                10,
                macs(&[(1, 1)]),
                &[
                    "publish slot 0 gen 0 backends [0]",
                    "write 192.0.2.100/24 not-owned gen 0",
                    "solicit [198.51.100.2]",
                ],
            ),
            (
                20,
                macs(&[(1, 1), (2, 2)]),
                &[
                    "publish slot 0 gen 1 backends [0, 1]",
                    "write 192.0.2.100/24 not-owned gen 1",
                ],
            ),
            (30, macs(&[(1, 1), (2, 2)]), &[]),
            (
                40,
                Input::Drain {
                    backend: "198.51.100.2".into(),
                    drained: true,
                },
                &[
                    "publish slot 0 gen 0 backends [0]",
                    "write 192.0.2.100/24 not-owned gen 0",
                    "done: backend 198.51.100.2 drained (keeps its flows, gets no new ones) in lb",
                ],
            ),
            (
                50,
                Input::Drain {
                    backend: "198.51.100.9".into(),
                    drained: true,
                },
                &["error: no balanced VIP has backend 198.51.100.9"],
            ),
        ],
    );
}

/// An IPv6 VIP balances like an IPv4 one: its backends' MACs come from the
/// same neighbour snapshots (the Neighbour Discovery table), the unknown
/// ones are solicited, and drain names them by IPv6 address.
#[test]
fn an_ipv6_vip_balances_over_backends_from_the_neighbour_discovery_table() {
    let balanced6 = "[[vip]]\nname = \"lb6\"\naddress = \"2001:db8::100/64\"\nmode = \"balance\"\n[[vip.backend]]\naddress = \"2001:db8::21\"\n[[vip.backend]]\naddress = \"2001:db8::22\"\n";
    let mut n = start(config(balanced6), Sources::default()).unwrap();
    let mac = |last: u16, mac: u8| {
        (
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)),
            [2, 0, 0, 0, 0, mac],
        )
    };
    play(
        &mut n,
        &[
            (0, Input::Start, &[]),
            (
                10,
                Input::Neighbours([mac(0x21, 1)].into_iter().collect()),
                &[
                    "publish slot 0 gen 1 backends [0]",
                    "write 2001:db8::100/64 not-owned gen 1",
                    "solicit [2001:db8::22]",
                ],
            ),
            (
                20,
                Input::Neighbours([mac(0x21, 1), mac(0x22, 2)].into_iter().collect()),
                &[
                    "publish slot 0 gen 0 backends [0, 1]",
                    "write 2001:db8::100/64 not-owned gen 0",
                ],
            ),
            (
                30,
                Input::Drain {
                    backend: "2001:db8::22".into(),
                    drained: true,
                },
                &[
                    "publish slot 0 gen 1 backends [0]",
                    "write 2001:db8::100/64 not-owned gen 1",
                    "done: backend 2001:db8::22 drained (keeps its flows, gets no new ones) in lb6",
                ],
            ),
        ],
    );
}

fn reload(n: &mut Node, at: u64, text: &str) -> Vec<String> {
    let plan = plan(n, config(text), SOURCES).expect("reload plan");
    n.handle(
        Duration::from_millis(at),
        Input::Reload {
            plan: Box::new(plan),
            healthy: HashSet::new(),
        },
    )
    .iter()
    .map(line)
    .collect()
}

#[test]
fn reload_adds_removes_and_changes_vips_and_backends() {
    let two = format!(
        "{OPERATOR_VIP}{}",
        BALANCED.replace("192.0.2.100/24", "192.0.2.110/24")
    );
    let mut n = owning_web(&two);
    // web goes (released, then forgotten); lb keeps its slot and table pair
    // and gets a third backend; api comes with a fresh counter slot.
    let lb_only_more = format!(
        "{}[[vip.backend]]\naddress = \"198.51.100.3\"\n[[vip]]\nname = \"api\"\naddress = \"192.0.2.101/24\"\n",
        BALANCED.replace("192.0.2.100/24", "192.0.2.110/24")
    );
    assert_eq!(
        reload(&mut n, 20, &lb_only_more),
        [
            "release 192.0.2.100/24 not-owned",
            "forget 192.0.2.100/24",
            "publish slot 0 gen 0 backends [4294967295]",
            "write 192.0.2.110/24 not-owned gen 0",
            "reset counters 1",
            "write 192.0.2.101/24 not-owned gen 0",
        ]
    );
    let names: Vec<&str> = n.vips().iter().map(Vip::name).collect();
    assert_eq!(names, ["lb", "api"]);
    assert_eq!(n.vips()[0].id, 2, "lb keeps its counter slot");
    assert_eq!(n.vips()[1].id, 1, "api takes the free one");
    let ids: Vec<u32> = n.vips()[0]
        .balance
        .as_ref()
        .unwrap()
        .backends
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(ids, [0, 1, 2], "backends that stay keep their ids");
    // A backend leaves: its id is marked gone and not reused by this reload.
    let one_backend = "[[vip]]\nname = \"lb\"\naddress = \"192.0.2.110/24\"\nmode = \"balance\"\n[[vip.backend]]\naddress = \"198.51.100.1\"\n[[vip.backend]]\naddress = \"198.51.100.4\"\n";
    let effects = reload(&mut n, 30, one_backend);
    assert_eq!(
        effects[..3],
        [
            "forget 192.0.2.101/24",
            "clear backends [1, 2]",
            "publish slot 0 gen 1 backends [4294967295]",
        ]
    );
    let ids: Vec<u32> = n.vips()[0]
        .balance
        .as_ref()
        .unwrap()
        .backends
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(
        ids,
        [0, 3],
        "a new backend does not reuse an id retired by the same reload"
    );
}

#[test]
fn a_reload_changing_an_elected_vip_restarts_its_election() {
    let mut n = master_at_342();
    assert_eq!(
        reload(&mut n, 400, &elected(120, "")),
        [
            "advert vrid 51 priority 0",
            "write 192.0.2.100/24 owned gen 0 lease 341.40625ms",
            "release 192.0.2.100/24 not-owned",
            "forget 192.0.2.100/24",
            "reset counters 1",
            "write 192.0.2.100/24 not-owned gen 0",
        ]
    );
    assert_eq!(phase(&n, "web"), Phase::Backup);
}

#[test]
fn refused_reloads_change_nothing() {
    let n = owning_web(&format!("{OPERATOR_VIP}{BALANCED}").replace(
        "name = \"lb\"\naddress = \"192.0.2.100/24\"",
        "name = \"lb\"\naddress = \"192.0.2.110/24\"",
    ));
    let before = format!("{n:?}");
    let refused = |text: String| plan(&n, config(&text), SOURCES).unwrap_err().to_string();
    assert_eq!(
        refused(format!("xdp_mode = \"generic\"\n{OPERATOR_VIP}")),
        "changing xdp_mode needs a restart"
    );
    // The case that failed half-way before plans existed: web goes, then
    // the new backends need more ids than are free (every id in use or
    // retired by this very reload).
    let mut many = String::new();
    for v in 0..lbfo_common::MAX_BALANCED_VIPS {
        many.push_str(&format!(
            "[[vip]]\nname = \"lb{v}\"\naddress = \"192.0.2.{}/24\"\nmode = \"balance\"\n",
            120 + v
        ));
        for b in 0..256 {
            many.push_str(&format!("[[vip.backend]]\naddress = \"198.51.100.{b}\"\n"));
        }
    }
    let mut full = start(config(&many), Sources::default()).unwrap();
    full.initial_effects();
    let full_before = format!("{full:?}");
    let moved = many.replace("198.51.100.", "203.0.113.");
    let error = plan(
        &full,
        config(&moved[..moved.find("[[vip]]\nname = \"lb15\"").unwrap()]),
        Sources::default(),
    )
    .unwrap_err();
    assert!(
        matches!(error, PlanError::NoBackendId { .. }),
        "expected running out of backend ids, got {error}"
    );
    assert_eq!(
        format!("{full:?}"),
        full_before,
        "a refused plan changes nothing"
    );
    assert_eq!(format!("{n:?}"), before, "a refused plan changes nothing");
}

#[test]
fn shutdown_releases_an_operator_vip_and_runs_its_notify_script() {
    let with_notify = format!("{OPERATOR_VIP}notify = \"/usr/local/bin/notify\"\n");
    let mut n = node(&with_notify);
    play(
        &mut n,
        &[
            (0, Input::Start, &[]),
            (
                10,
                Input::Own("web".into()),
                &[
                    "take 192.0.2.100/24 lease 900ms",
                    "done: web 192.0.2.100/24 is now owned by this node",
                    "notify web initialize owner",
                ],
            ),
            (
                20,
                Input::Shutdown,
                &[
                    "release 192.0.2.100/24 not-owned",
                    "notify web owner standby",
                    "stopped",
                ],
            ),
            // Stopped: nothing more happens.
            (30, Input::RenewLeases, &[]),
        ],
    );
}

/// A balanced VIP `lb{n}` at 192.0.2.{120 + n} with backends 198.51.100.1
/// to 198.51.100.{backends}.
fn balanced(n: u8, backends: u8) -> String {
    let mut text = format!(
        "[[vip]]\nname = \"lb{n}\"\naddress = \"192.0.2.{}/24\"\nmode = \"balance\"\n",
        120 + n
    );
    for b in 1..=backends {
        text.push_str(&format!("[[vip.backend]]\naddress = \"198.51.100.{b}\"\n"));
    }
    text
}

#[test]
fn maps_are_sized_for_what_is_configured_plus_headroom() {
    let sized = |text: &str| {
        let c = Capacity::for_config(&config(text));
        (c.balanced_vips, c.backends, c.conntrack_entries)
    };
    assert_eq!(sized(OPERATOR_VIP), (0, 0, 0), "no balancing: no tables");
    assert_eq!(
        sized(&balanced(0, 2)),
        (3, 258, 262_144),
        "1 + 2 VIPs, 2 + 256 backends, the default connection table"
    );
    assert_eq!(
        sized(&format!(
            "balanced_vip_headroom = 0\nbackend_headroom = 1\nconntrack_entries = 4096\n{}",
            balanced(0, 2)
        )),
        (1, 3, 4096)
    );
    assert_eq!(
        sized(&format!("balanced_vip_headroom = 1\n{OPERATOR_VIP}")),
        (1, 256, 262_144),
        "room asked for without a balanced VIP"
    );
    let many: String = (0..16).map(|n| balanced(n, 250)).collect();
    assert_eq!(
        sized(&many),
        (16, 4096, 262_144),
        "the XDP program's sizes are the upper bound"
    );
}

#[test]
fn a_reload_that_needs_bigger_maps_is_refused_and_changes_nothing() {
    let refused = |n: &Node, text: &str| plan(n, config(text), SOURCES).unwrap_err().to_string();
    let n = node(OPERATOR_VIP);
    let before = format!("{n:?}");
    assert_eq!(
        refused(&n, &format!("{OPERATOR_VIP}{}", balanced(1, 2))),
        "needs a restart: the maps were sized for 0 balanced VIPs at start-up, the new configuration has 1 (balanced_vip_headroom leaves room for more)"
    );
    assert_eq!(
        refused(&n, &format!("conntrack_entries = 4096\n{OPERATOR_VIP}")),
        "changing conntrack_entries (the maps are sized at start-up) needs a restart"
    );
    assert_eq!(format!("{n:?}"), before, "a refused plan changes nothing");

    // Room for one more balanced VIP and two more backends.
    let sized = "balanced_vip_headroom = 1\nbackend_headroom = 2\n";
    let mut n = node(&format!("{sized}{}", balanced(0, 2)));
    assert_eq!(
        reload(
            &mut n,
            0,
            &format!("{sized}{}{}", balanced(0, 2), balanced(1, 2))
        ),
        [
            "reset counters 2".to_string(),
            format!("publish slot 1 gen 1 backends [{}]", u32::MAX),
            "write 192.0.2.121/24 not-owned gen 1".into(),
        ],
        "the second balanced VIP fits the headroom"
    );
    let before = format!("{n:?}");
    assert_eq!(
        refused(
            &n,
            &format!(
                "{sized}{}{}{}",
                balanced(0, 2),
                balanced(1, 2),
                balanced(2, 1)
            )
        ),
        "needs a restart: the maps were sized for 2 balanced VIPs at start-up, the new configuration has 3 (balanced_vip_headroom leaves room for more)"
    );
    // lb0 has backend ids 0 and 1, lb1 2 and 3: none is left for a third.
    assert_eq!(
        refused(&n, &format!("{sized}{}{}", balanced(0, 3), balanced(1, 2))),
        "vip \"lb0\": no free backend id; needs a restart: the maps were sized for 4 backends at start-up (backend_headroom leaves room for more; the ids of backends removed by a reload are reused only from the next reload on)"
    );
    assert_eq!(format!("{n:?}"), before, "a refused plan changes nothing");
}

const ROUTE_VIP: &str =
    "[[vip]]\nname = \"web\"\naddress = \"192.0.2.100\"\nannounce = \"route\"\n";

#[test]
fn a_route_vip_without_checks_is_announced_at_start_and_takes_no_orders() {
    let mut n = node(ROUTE_VIP);
    play(
        &mut n,
        &[
            (0, Input::Start, &["take 192.0.2.100/32 lease 900ms route"]),
            (
                10,
                Input::Own("web".into()),
                &[
                    "error: web is a route VIP: every node whose checks pass announces it; `lbfo own/release` only apply to ARP VIPs without vrid",
                ],
            ),
            (
                20,
                Input::RenewLeases,
                &["write 192.0.2.100/32 owned gen 0 lease 900ms"],
            ),
            // No gratuitous ARP for a route VIP.
            (30, Input::RefreshAnnouncements, &[]),
        ],
    );
    assert_eq!(n.vips()[0].reason, "announced on lbfo0: no checks");
    play(
        &mut n,
        &[(
            40,
            Input::Shutdown,
            &["release 192.0.2.100/32 not-owned route", "stopped"],
        )],
    );
}

#[test]
fn a_route_vip_is_withdrawn_while_its_check_fails_or_the_link_is_down() {
    let mut n = node(&format!(
        "{ROUTE_VIP}[[vip.check]]\nkind = \"tcp\"\naddress = \"127.0.0.1:80\"\n"
    ));
    play(
        &mut n,
        &[
            (0, Input::Start, &[]),
            (
                10,
                check("web", 0, true),
                &["take 192.0.2.100/32 lease 900ms route"],
            ),
            (
                20,
                check("web", 0, false),
                &["release 192.0.2.100/32 not-owned route"],
            ),
            (25, Input::RenewLeases, &[]),
            (
                30,
                check("web", 0, true),
                &["take 192.0.2.100/32 lease 900ms route"],
            ),
            (
                40,
                Input::Link { up: false },
                &["release 192.0.2.100/32 not-owned route"],
            ),
            (
                50,
                Input::Link { up: true },
                &["take 192.0.2.100/32 lease 900ms route"],
            ),
        ],
    );
    assert_eq!(phase(&n, "web"), Phase::Announced);
    assert_eq!(
        n.vips()[0].reason,
        "announced on lbfo0: interface eth0 has a link again"
    );
    n.handle(Duration::from_millis(60), check("web", 0, false));
    assert_eq!(phase(&n, "web"), Phase::Fault);
    assert_eq!(n.vips()[0].reason, "withdrawn: fault: check 0 fails");
}

#[test]
fn a_failed_announcement_is_tried_again_at_the_next_renewal() {
    let mut n = node(ROUTE_VIP);
    play(
        &mut n,
        &[
            (0, Input::Start, &["take 192.0.2.100/32 lease 900ms route"]),
            (
                5,
                Input::TakeFailed {
                    address: Ipv4Addr::new(192, 0, 2, 100).into(),
                    error: "no route device is open for route VIPs".into(),
                },
                &[],
            ),
            (
                300,
                Input::RenewLeases,
                &["take 192.0.2.100/32 lease 900ms route"],
            ),
        ],
    );
}

#[test]
fn a_balanced_route_vip_waits_for_the_table_every_node_builds() {
    let text = "[[vip]]\nname = \"lb\"\naddress = \"192.0.2.100\"\nannounce = \"route\"\nmode = \"balance\"\n[[vip.backend]]\naddress = \"198.51.100.1\"\n[[vip.backend]]\naddress = \"198.51.100.2\"\n[[vip.backend.check]]\nkind = \"tcp\"\naddress = \"198.51.100.2:80\"\n";
    let mut n = node(text);
    let backend_check = |healthy| Input::Check {
        key: CheckKey {
            vip: "lb".into(),
            backend: Some(Ipv4Addr::new(198, 51, 100, 2).into()),
            index: 0,
        },
        healthy,
        why: "backend check".into(),
    };
    play(
        &mut n,
        &[
            (0, Input::Start, &[]),
            (
                10,
                macs(&[(1, 1), (2, 2)]),
                &[
                    "publish slot 0 gen 0 backends [0]",
                    "write 192.0.2.100/32 not-owned gen 0",
                ],
            ),
        ],
    );
    assert_eq!(
        n.vips()[0].reason,
        "not announced: waiting for the first result of the checks of backend(s) 198.51.100.2"
    );
    // A failing backend check settles it too: every node leaves it out.
    play(
        &mut n,
        &[(
            20,
            backend_check(false),
            &["take 192.0.2.100/32 lease 900ms route"],
        )],
    );
    play(
        &mut n,
        &[(
            30,
            backend_check(true),
            &[
                "publish slot 0 gen 1 backends [0, 1]",
                "write 192.0.2.100/32 owned gen 1 lease 900ms",
            ],
        )],
    );
    assert_eq!(phase(&n, "lb"), Phase::Announced);

    // Without MACs known, the table would be one of its own.
    let mut n = node(text);
    play(
        &mut n,
        &[
            (0, Input::Start, &[]),
            (
                10,
                backend_check(true),
                &[
                    "publish slot 0 gen 0 backends [4294967295]",
                    "write 192.0.2.100/32 not-owned gen 0",
                ],
            ),
        ],
    );
    assert_eq!(
        n.vips()[0].reason,
        "not announced: waiting for the MAC of backend(s) 198.51.100.1, 198.51.100.2 (the table would differ from the other nodes')"
    );
    play(
        &mut n,
        &[(
            20,
            macs(&[(1, 1), (2, 2)]),
            &[
                "publish slot 0 gen 1 backends [0, 1]",
                "write 192.0.2.100/32 not-owned gen 1",
                "take 192.0.2.100/32 lease 900ms route",
            ],
        )],
    );
}

#[test]
fn a_reload_changing_route_device_is_refused_and_changing_announce_restarts_the_vip() {
    let mut n = node(ROUTE_VIP);
    play(
        &mut n,
        &[(0, Input::Start, &["take 192.0.2.100/32 lease 900ms route"])],
    );
    let error = plan(
        &n,
        config(&format!("route_device = \"bgp0\"\n{ROUTE_VIP}")),
        SOURCES,
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "changing route_device (lbfo0 -> bgp0) needs a restart"
    );
    // From route to ARP: withdrawn and gone, then back as an ARP VIP on standby.
    let effects = reload(&mut n, 10, &ROUTE_VIP.replace("announce = \"route\"\n", ""));
    assert_eq!(
        effects,
        [
            "release 192.0.2.100/32 not-owned route",
            "forget 192.0.2.100/32",
            "reset counters 1",
            "write 192.0.2.100/32 not-owned gen 0",
        ]
    );
    assert_eq!(phase(&n, "web"), Phase::Standby);
}

/// An IPv4 and an IPv6 VIP share VRID 51 (separate virtual routers, RFC
/// 5798): each advertises from its family's source, and a peer's
/// advertisement reaches only the VIP of its family.
#[test]
fn ipv4_and_ipv6_virtual_routers_share_a_vrid() {
    let mut n = node(
        "[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\nvrid = 51\npriority = 150\nadvert_interval_ms = 100\n\
         [[vip]]\nname = \"web6\"\naddress = \"2001:db8::100/64\"\nvrid = 51\npriority = 150\nadvert_interval_ms = 100\n",
    );
    assert!(n.handle(Duration::ZERO, Input::Start).is_empty());
    let effects = n.handle(Duration::from_millis(342), Input::Timer);
    let sources: Vec<IpAddr> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendAdvert { source, advert, .. } => {
                assert_eq!(advert.addresses[0].is_ipv6(), source.is_ipv6());
                Some(*source)
            }
            _ => None,
        })
        .collect();
    assert_eq!(sources, [IpAddr::V4(PRIMARY), IpAddr::V6(PRIMARY6)]);
    assert_eq!(phase(&n, "web"), Phase::Master);
    assert_eq!(phase(&n, "web6"), Phase::Master);
    // A higher IPv6 Master: web6 steps down, web stays.
    let effects = n.handle(
        Duration::from_millis(400),
        Input::Advert {
            from: "fe80::12".parse().unwrap(),
            advert: Advertisement {
                version: Version::V3,
                auth: Auth::None,
                vrid: 51,
                priority: 200,
                max_advert_interval_cs: 10,
                addresses: vec!["2001:db8::100".parse().unwrap()],
            },
        },
    );
    assert!(
        effects
            .iter()
            .map(line)
            .any(|l| l.starts_with("release 2001:db8::100/64")),
        "{effects:?}"
    );
    assert_eq!(phase(&n, "web6"), Phase::Backup);
    assert_eq!(phase(&n, "web"), Phase::Master);
}
