//! lbfo's control plane. The `lbfo` binary is a thin CLI over these parts:
//!
//! - [`config`]: the TOML file, validated before anything is touched.
//! - [`datapath`]: the embedded XDP program and its maps.
//! - [`netlink`]: the interface, its addresses and the XDP attachment.
//! - [`core`]: every decision, pure: inputs in, effects out.
//! - [`ownership`]: taking and giving up a VIP in the right order.
//! - [`vrrp`]: VRRP (versions 3 and 2), the protocol, one VIP's election and its I/O.
//! - [`health`]: health checks; [`notify`]: notify scripts.
//! - [`balance`]: Maglev tables and the backends behind them.
//! - [`announce`] and [`arp`]: gratuitous ARP.
//! - [`control`] and [`status`]: the control socket behind `lbfo status/own/release`.
//! - [`metrics`]: the Prometheus registry and its endpoint.
//! - [`keepalived`]: `lbfo import-keepalived`, keepalived's syntax and its mapping.
//! - [`daemon`]: `lbfo run`, the I/O around the core.

pub mod announce;
pub mod arp;
pub mod balance;
pub mod checksum;
pub mod clock;
pub mod config;
pub mod control;
pub mod core;
pub mod daemon;
pub mod datapath;
pub mod health;
pub mod keepalived;
pub mod metrics;
pub mod nd;
pub mod netlink;
pub mod notify;
pub mod ownership;
pub mod route;
pub mod status;
pub mod vrrp;
