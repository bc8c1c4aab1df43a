//! Types shared by the XDP program (`lbfo-ebpf`) and the control plane (`lbfo-user`).
//!
//! Every map key and value is defined here once, `#[repr(C)]` with explicit
//! padding, so both sides agree on the layout byte for byte.
#![no_std]

/// Most VIPs one node can carry. Sizes the `VIPS` hash map; `VIP_COUNTERS`
/// has one more slot for frames that belong to no VIP.
pub const MAX_VIPS: u32 = 256;

/// Counter slot for frames that cannot be attributed to a VIP (too short or
/// malformed to find an address in). VIP ids start at 1.
pub const NO_VIP: u32 = 0;

/// Key of the `VIPS` map: the IPv4 address with its bytes in wire order,
/// read as a native `u32` (`u32::from_ne_bytes(addr.octets())`), so the XDP
/// program can use the four bytes from the packet without swapping them.
pub type VipKey = u32;

/// How the owner handles IPv4 traffic to a VIP.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VipMode {
    /// The owner's own network stack serves the VIP (`XDP_PASS`).
    Local = 0,
}

/// Value of the `VIPS` map: who answers for the VIP, and until when.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipState {
    /// The node answers for the VIP only while `bpf_ktime_get_ns()` (CLOCK_MONOTONIC)
    /// is below this. The control plane keeps pushing it forward; if it stops
    /// (hung or killed), the node falls silent by itself.
    pub lease_deadline_ns: u64,
    /// Source MAC of ARP replies for the VIP: the owning interface's MAC.
    pub mac: [u8; 6],
    /// 1 while this node owns the VIP, 0 otherwise.
    pub owned: u8,
    /// A [`VipMode`] value.
    pub mode: u8,
    /// Index into `VIP_COUNTERS`, 1..=MAX_VIPS.
    pub vip_id: u32,
    pub _pad: u32,
}

impl VipState {
    /// Whether this node answers for the VIP at monotonic time `now_ns`.
    #[inline(always)]
    pub fn answers(&self, now_ns: u64) -> bool {
        self.owned != 0 && now_ns < self.lease_deadline_ns
    }
}

/// Per-CPU counters, one slot per VIP id (slot [`NO_VIP`] for the rest).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct VipCounters {
    /// ARP requests for the VIP answered by XDP.
    pub arp_replied: u64,
    /// ARP requests for the VIP dropped because this node does not own it (or its lease ran out).
    pub arp_dropped_not_owner: u64,
    /// IPv4 packets to the VIP handed to the local stack.
    pub ip_passed: u64,
    /// IPv4 packets to the VIP dropped because this node does not own it.
    pub ip_dropped_not_owner: u64,
    /// ARP replies or announcements from another MAC claiming a VIP this node owns.
    pub conflicts_seen: u64,
    /// Frames too short or malformed to parse.
    pub malformed: u64,
}

impl VipCounters {
    /// Sums per-CPU values into one.
    pub fn add(&mut self, other: &Self) {
        self.arp_replied += other.arp_replied;
        self.arp_dropped_not_owner += other.arp_dropped_not_owner;
        self.ip_passed += other.ip_passed;
        self.ip_dropped_not_owner += other.ip_dropped_not_owner;
        self.conflicts_seen += other.conflicts_seen;
        self.malformed += other.malformed;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::VipState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipCounters {}
}
