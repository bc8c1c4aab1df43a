//! lbfo's control plane. The `lbfo` binary is a thin CLI over these parts:
//!
//! - [`config`]: the TOML file, validated before anything is touched.
//! - [`datapath`]: the embedded XDP program and its maps.
//! - [`netlink`]: the interface, its addresses and the XDP attachment.
//! - [`ownership`]: taking and giving up a VIP in the right order.
//! - [`vrrp`] and [`election`]: VRRPv3, the protocol and its I/O.
//! - [`balance`] and [`balancer`]: Maglev tables and the backends behind them.
//! - [`announce`] and [`arp`]: gratuitous ARP.
//! - [`control`] and [`status`]: the control socket behind `lbfo status/own/release`.
//! - [`daemon`]: `lbfo run`, tying it all together.

pub mod announce;
pub mod arp;
pub mod balance;
pub mod balancer;
pub mod checksum;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod election;
pub mod health;
pub mod netlink;
pub mod ownership;
pub mod status;
pub mod vrrp;
