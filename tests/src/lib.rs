//! lbfo's test lab: network namespaces, a packet builder, a runner for the
//! real XDP program under BPF_PROG_TEST_RUN, and a driver for `lbfo run`
//! daemons. Used by the end-to-end tests, `cargo xtask demo` and
//! `cargo xtask bench`.

pub mod advert_watch;
pub mod bench;
pub mod bird;
pub mod bpftool;
pub mod demo;
pub mod fetcher;
pub mod frames;
pub mod http_server;
pub mod keepalive;
pub mod keepalived;
pub mod lab;
pub mod nginx;
pub mod node;
pub mod prober;
pub mod prometheus;
pub mod rfc5798;
pub mod routing;
pub mod xdp_tester;
