//! VRRP version 3 (RFC 5798) for IPv4 and IPv6, and version 2 (RFC 3768)
//! for IPv4, wire-compatible with keepalived.
//!
//! This module is the protocol without I/O: [`packet`] turns advertisements
//! into bytes and back, [`machine`] is one virtual router's state machine fed
//! with events (startup, timers, received advertisements, health) and
//! answering with actions (send, take over, give up). Time is an argument,
//! never read from a clock, so every transition is tested with a fake clock;
//! [`instance`] is one VIP's election (machine, peers, counters); [`socket`]
//! is the thin I/O layer (raw IPv4 or IPv6 sockets for protocol 112) and [`timer`]
//! the timerfd the daemon sleeps on; address ownership lives in the daemon.

pub mod instance;
pub mod machine;
pub mod packet;
pub mod socket;
pub mod timer;

pub use instance::{Instance, Sources, VrrpCounters};
pub use machine::{
    Action, Event, InstanceConfig, InvalidConfig, Machine, PeerMaster, State, validate_settings,
};
pub use packet::{
    Advertisement, Auth, IPPROTO_VRRP, Reject, VRRP_MULTICAST, VRRP_MULTICAST_V6, VRRP_TTL, Version,
};
