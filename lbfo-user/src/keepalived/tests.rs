//! The importer on small keepalived files: what maps, what warns, what
//! refuses. The samples Debian ships are run by tests/tests/import.rs.

use std::path::{Path, PathBuf};

use super::*;
use crate::config::Config;

struct File(PathBuf);

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().expect("a folder"));
    }
}

fn file(text: &str) -> File {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lbfo-kaimport-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keepalived.conf");
    std::fs::write(&path, text).unwrap();
    File(path)
}

fn run(text: &str) -> (File, Import) {
    let f = file(text);
    let import = import(&f.0, "node1");
    (f, import)
}

/// keepalived's usual pair config: v2 defaults, PASS, two addresses, a
/// script that adds 2 points while it passes.
const PAIR: &str = r#"
global_defs {
    router_id node1
    vrrp_garp_master_repeat 3
}
vrrp_script chk_haproxy {
    script "/bin/true"
    interval 2
    weight 2
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 101
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass secret
    }
    virtual_ipaddress {
        192.0.2.100/24 dev eth0
        192.0.2.101
    }
    track_script {
        chk_haproxy
    }
    notify_master "/etc/keepalived/master.sh VI_1"
    notify_backup /etc/keepalived/backup.sh
    notify_fault "/etc/keepalived/fault.sh"
    notify_stop /etc/keepalived/stop.sh
}
"#;

#[test]
fn a_usual_pair_config_maps_to_an_equivalent_lbfo_config() {
    let (f, import) = run(PAIR);
    assert!(import.errors.is_empty(), "{:?}", import.errors);
    let config = Config::parse(&import.toml, Path::new("imported.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{}", import.toml));
    assert_eq!(config.interface, "eth0");
    assert_eq!(config.garp.count, 3);
    let vip = &config.vips[0];
    assert_eq!(vip.name, "VI_1");
    assert_eq!(vip.addresses_text(), "192.0.2.100/24, 192.0.2.101/32");
    assert_eq!(
        (
            vip.vrrp.vrid,
            vip.vrrp.priority,
            vip.vrrp.advert_interval_ms
        ),
        (Some(51), 101, 1000)
    );
    assert_eq!(vip.vrrp.vrrp_version, 2, "keepalived's default version");
    assert_eq!(vip.vrrp.auth_pass.as_deref(), Some("secret"));
    let check = &vip.checks[0];
    assert_eq!(check.weight, Some(2));
    assert_eq!((check.rise, check.fall), (1, 1), "keepalived's defaults");
    let argv = |v: &Option<Vec<String>>| v.clone().unwrap_or_default().join(" ");
    assert_eq!(
        [
            argv(&vip.notify_master),
            argv(&vip.notify_backup),
            argv(&vip.notify_fault),
            argv(&vip.notify_stop)
        ],
        [
            "/etc/keepalived/master.sh VI_1",
            "/etc/keepalived/backup.sh",
            "/etc/keepalived/fault.sh",
            "/etc/keepalived/stop.sh"
        ]
    );
    assert_eq!(check.interval, std::time::Duration::from_secs(2));
    // The warnings name their lines: router_id (3) and state MASTER (12).
    let file = f.0.display().to_string();
    for (line, what) in [(3, "router_id"), (12, "state MASTER")] {
        assert!(
            import
                .warnings
                .iter()
                .any(|w| w.starts_with(&format!("{file}:{line}: warning: {what}"))),
            "expected a warning at line {line} about {what}: {:?}",
            import.warnings
        );
    }
}

#[test]
fn what_would_behave_differently_is_an_error_at_its_line() {
    let cases = [
        (
            "virtual_server 192.0.2.10 80 {\n  lb_kind NAT\n  real_server 192.0.2.21 80 {\n    TCP_CHECK {\n    }\n  }\n}\n",
            ":2: error: lb_kind NAT",
        ),
        (
            "vrrp_instance v {\n interface eth0\n virtual_router_id 1\n authentication {\n  auth_type AH\n  auth_pass x\n }\n virtual_ipaddress {\n  192.0.2.1\n }\n}\n",
            ":5: error: auth_type AH",
        ),
        (
            "vrrp_instance v {\n interface eth0\n virtual_router_id 1\n priority PRIORITY\n virtual_ipaddress {\n  192.0.2.1\n }\n}\n",
            ":4: error: priority \"PRIORITY\"",
        ),
        (
            "vrrp_instance v {\n virtual_ipaddress {\n  {{VIP}}\n }\n}\n",
            ":3: error: a template placeholder",
        ),
        (
            "interface = \"eth0\"\n[[vip]]\n",
            ":1: error: \"interface\" is not a keepalived keyword",
        ),
        (
            "vrrp_instance a {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n  192.0.2.1\n }\n}\nvrrp_instance b {\n interface eth1\n virtual_router_id 2\n virtual_ipaddress {\n  192.0.2.2\n }\n}\n",
            ":9: error: interface eth1: one lbfo daemon serves one interface",
        ),
        (
            "vrrp_instance v {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n  2001:db8::1/64\n }\n}\n",
            ":5: error: 2001:db8::1/64: lbfo serves IPv4 VIPs only",
        ),
    ];
    for (text, want) in cases {
        let (_f, import) = run(text);
        assert!(
            import.errors.iter().any(|e| e.contains(want)),
            "{text:?}: expected an error containing {want:?}, got {:?}",
            import.errors
        );
        assert!(import.toml.is_empty(), "no output with errors");
    }
}

#[test]
fn a_dr_virtual_server_becomes_a_balanced_vip() {
    let text = "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 9\n version 3\n advert_int 0.1\n virtual_ipaddress {\n  192.0.2.10/24\n }\n}\nvirtual_server 192.0.2.10 80 {\n delay_loop 2\n lb_kind DR\n lb_algo wrr\n real_server 192.0.2.21 80 {\n  weight 3\n  HTTP_GET {\n   url {\n    path /health\n    status_code 200\n   }\n   connect_timeout 1\n   retry 2\n  }\n }\n real_server 192.0.2.22 80 {\n  TCP_CHECK {\n   connect_timeout 1\n  }\n }\n}\n";
    let (_f, import) = run(text);
    assert!(import.errors.is_empty(), "{:?}", import.errors);
    let config = Config::parse(&import.toml, Path::new("imported.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{}", import.toml));
    let vip = &config.vips[0];
    assert_eq!(vip.mode, crate::config::VipServeMode::Balance);
    assert_eq!(vip.vrrp.vrrp_version, 3);
    assert_eq!(vip.vrrp.advert_interval_ms, 100);
    assert_eq!(vip.backends.len(), 2);
    assert_eq!(vip.backends[0].weight, 3);
    let http = &vip.backends[0].checks[0];
    assert_eq!(http.to_string(), "http GET http://192.0.2.21:80/health");
    assert_eq!((http.rise, http.fall), (1, 3));
    assert_eq!(
        vip.backends[1].checks[0].to_string(),
        "tcp connect 192.0.2.22:80"
    );
}
