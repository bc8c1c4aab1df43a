//! The routed lab of docs/SCALING.md: a client on one segment, a router
//! between two segments running BIRD with an eBGP session to every lbfo
//! node, the lbfo nodes (each with its own BIRD exporting the route
//! device), and three DSR backends. The VIP is a route VIP in balance
//! mode, outside both segments, so the client reaches it only through the
//! router's ECMP route.
//!
//! ```text
//! client 203.0.113.2 ── br1 ── 203.0.113.1 router 192.0.2.1 ── br0 ── n1 .11, n2 .12, n3 .13
//!                                                                  └── b1 .21, b2 .22, b3 .23
//! ```

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{
    bird::{self, Bird},
    lab::{Host, Lab, ip, netns_exec, run, wait_for},
    node::{HttpServer, LbfoNode},
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
pub const VIP_PORT: u16 = 8080;
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The VIP check on every node: its own HTTP server, `fall` failures in a
/// row `interval` apart withdraw the VIP.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);
pub const CHECK_FALL: u32 = 3;
pub const CHECK_RISE: u32 = 2;
/// Every node serves metrics here, on its own namespace's loopback.
pub const METRICS: &str = "127.0.0.1:9655";

pub struct RouteLab {
    pub client: Host,
    pub router: Host,
    pub router_bird: Bird,
    /// The node hosts n1, n2, ...
    pub hosts: Vec<Host>,
    pub birds: Vec<Bird>,
    /// The running lbfo of each node, if it runs.
    pub nodes: Vec<Option<LbfoNode>>,
    /// Each node's VIP check target (an HTTP server on the node).
    pub checks: Vec<HttpServer>,
    /// The backends b1, b2, b3.
    pub backends: Vec<HttpServer>,
    pub weights: Vec<u32>,
    /// Kills every process above and removes the namespaces when dropped.
    pub lab: Lab,
}

impl RouteLab {
    /// The lab with `nodes` node hosts (each with its BIRD, none with lbfo
    /// yet) and one backend per weight.
    pub fn new(nodes: usize, weights: &[u32]) -> Result<RouteLab> {
        let mut lab = Lab::new().context("creating the lab (needs root)")?;
        lab.add_segment("br1")?;
        let client = lab.add_host_on("client", CLIENT, "br1")?;
        // Forwarded as they are by XDP, frames need finished checksums (a
        // veth leaves them to "hardware"): the client computes them.
        run(netns_exec(&client.ns, "ethtool").args(["-K", "eth0", "tx", "off"]))?;
        ip(
            &client.ns,
            &[
                "route",
                "add",
                "default",
                "via",
                &ROUTER_CLIENT_SIDE.to_string(),
            ],
        )?;
        let router = lab.add_host("router", ROUTER)?;
        lab.add_interface(&router, "eth1", ROUTER_CLIENT_SIDE, "br1")?;
        bird::enable_ecmp_forwarding(&router.ns)?;
        let hosts: Vec<Host> = (0..nodes)
            .map(|i| lab.add_host(&format!("n{}", i + 1), node_addr(i)))
            .collect::<Result<_>>()?;
        let mut checks = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            checks.push(HttpServer::start(&mut lab, host, &format!("c{}", i + 1))?);
        }
        let mut backends = Vec::new();
        for i in 0..weights.len() {
            let b = lab.add_host(&format!("b{}", i + 1), backend_addr(i))?;
            // Direct server return: the VIP is the backend's own address,
            // never answered by ARP, and replies go to the router.
            ip(&b.ns, &["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            for (key, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
                for scope in ["all", "eth0"] {
                    run(netns_exec(&b.ns, "sysctl")
                        .args(["-qw", &format!("net.ipv4.conf.{scope}.{key}={value}")]))?;
                }
            }
            ip(
                &b.ns,
                &["route", "add", "default", "via", &ROUTER.to_string()],
            )?;
            backends.push(HttpServer::start_on(
                &mut lab,
                &b,
                &format!("b{}", i + 1),
                Ipv4Addr::UNSPECIFIED,
            )?);
        }
        let sessions: Vec<(String, Ipv4Addr)> =
            hosts.iter().map(|h| (h.name.clone(), h.addr)).collect();
        let router_bird = Bird::start(&mut lab, &router, &bird::router_config(ROUTER, &sessions))?;
        let mut birds = Vec::new();
        for host in &hosts {
            birds.push(Bird::start(
                &mut lab,
                host,
                &bird::node_config(host.addr, ROUTER, "lbfo0"),
            )?);
        }
        for host in &hosts {
            wait_for(
                Duration::from_secs(10),
                &format!("the router's BGP session to {}", host.name),
                || router_bird.established(&host.name),
            )
            .with_context(|| router_bird.log_text())?;
        }
        Ok(RouteLab {
            client,
            router,
            router_bird,
            nodes: hosts.iter().map(|_| None).collect(),
            hosts,
            birds,
            checks,
            backends,
            weights: weights.to_vec(),
            lab,
        })
    }

    /// Node `i`'s lbfo config: the route VIP balanced over the backends,
    /// with the VIP check and a check per backend.
    pub fn config(&self, i: usize) -> String {
        let mut c = format!(
            "interface = \"eth0\"\nxdp_mode = \"native\"\n[metrics]\nlisten = \"{METRICS}\"\n\n[[vip]]\nname = \"web\"\naddress = \"{VIP}\"\nannounce = \"route\"\nmode = \"balance\"\n\n[[vip.check]]\nkind = \"http\"\nurl = \"http://{}:8080/health\"\ninterval_ms = {}\ntimeout_ms = 50\nrise = {CHECK_RISE}\nfall = {CHECK_FALL}\n",
            node_addr(i),
            CHECK_INTERVAL.as_millis()
        );
        for (b, weight) in self.weights.iter().enumerate() {
            c.push_str(&format!(
                "\n[[vip.backend]]\naddress = \"{}\"\nweight = {weight}\n[[vip.backend.check]]\nkind = \"http\"\nurl = \"http://{}:8080/health\"\ninterval_ms = 100\ntimeout_ms = 50\nrise = 2\nfall = 2\n",
                backend_addr(b),
                backend_addr(b)
            ));
        }
        c
    }

    /// Starts lbfo on node `i` and waits until it announces the VIP.
    pub fn start_node(&mut self, i: usize) -> Result<()> {
        let config = self.config(i);
        let node = LbfoNode::start_logging(&mut self.lab, &self.hosts[i], &config, "info")?;
        node.wait_state("web", "announced", Duration::from_secs(10))
            .with_context(|| node.log_text())?;
        self.nodes[i] = Some(node);
        Ok(())
    }

    pub fn node(&self, i: usize) -> &LbfoNode {
        self.nodes[i].as_ref().expect("the node's lbfo runs")
    }

    /// `kill -9` of node `i`'s lbfo (again, if it was sent already), reaped.
    pub fn kill9(&mut self, i: usize) -> Result<()> {
        let node = self.nodes[i].take().expect("the node's lbfo runs");
        node.kill9()?;
        self.lab.wait(node.pid, Duration::from_secs(5))?;
        Ok(())
    }

    /// The nodes (by index) the router's route to the VIP goes through.
    pub fn nexthop_nodes(&self) -> Result<Vec<usize>> {
        Ok(bird::nexthops(&self.router.ns, VIP)?
            .into_iter()
            .filter_map(|gw| self.hosts.iter().position(|h| h.addr == gw))
            .collect())
    }

    /// Waits until the router's route has a nexthop for exactly `nodes`;
    /// returns how long that took.
    pub fn wait_nexthops(&self, nodes: &[usize], within: Duration) -> Result<Duration> {
        wait_for(
            within,
            &format!("the router's nexthops to be {nodes:?}"),
            || Ok(self.nexthop_nodes()? == nodes),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{e} (they are {:?}; router BIRD: {})",
                self.nexthop_nodes(),
                self.router_bird
                    .birdc(&["show", "route", "all"])
                    .unwrap_or_default()
            )
        })
    }

    /// `count` new connections from the client with curl, one request
    /// each, at most 30 s; by the backend that answered ("FAILED" for none).
    pub fn curl_many(&self, count: usize) -> Result<BTreeMap<String, usize>> {
        let script = format!(
            "end=$((SECONDS + 30)); for i in $(seq {count}); do [ $SECONDS -lt $end ] || break; curl -s -m 1 http://{VIP}:{VIP_PORT}/ || echo FAILED; echo; done"
        );
        let out = run(netns_exec(&self.client.ns, "bash").args(["-c", &script]))?;
        let mut served = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let who = line.split_whitespace().next().unwrap_or("").to_string();
            *served.entry(who).or_default() += 1;
        }
        Ok(served)
    }

    /// New flows node `i`'s XDP has sent to backends so far.
    pub fn new_flows(&self, i: usize) -> Result<u64> {
        Ok(self.node(i).status()?.vips[0]
            .backends
            .iter()
            .map(|b| b.counters.new_flows)
            .sum())
    }

    /// Flows node `i`'s connection table holds.
    pub fn tracked_flows(&self, i: usize) -> Result<u64> {
        Ok(self.node(i).status()?.vips[0]
            .backends
            .iter()
            .map(|b| b.active_flows)
            .sum())
    }

    /// Node `i`'s metrics exposition, fetched with curl in its namespace.
    pub fn metrics(&self, i: usize) -> Result<String> {
        let out = run(netns_exec(&self.hosts[i].ns, "curl").args([
            "-s",
            "-m",
            "2",
            &format!("http://{METRICS}/metrics"),
        ]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn target(&self) -> SocketAddrV4 {
        SocketAddrV4::new(VIP, VIP_PORT)
    }
}

pub fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 11 + i as u8)
}

pub fn backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 21 + i as u8)
}
