//! Types shared by the XDP program (`lbfo-ebpf`) and the control plane (`lbfo-user`).
//!
//! Every map key and value is defined here once, `#[repr(C)]` with explicit
//! padding, so both sides agree on the layout byte for byte.
#![no_std]

/// Most VIPs one node can carry, IPv4 and IPv6 together. Sizes the `VIPS`
/// and `VIPS6` hash maps (either may hold them all); `VIP_COUNTERS` has one
/// more slot for frames that belong to no VIP.
pub const MAX_VIPS: u32 = 256;

/// Counter slot for frames that cannot be attributed to a VIP (too short or
/// malformed to find an address in). VIP ids start at 1.
pub const NO_VIP: u32 = 0;

/// Key of the `VIPS` map: the IPv4 address with its bytes in wire order,
/// read as a native `u32` (`u32::from_ne_bytes(addr.octets())`), so the XDP
/// program can use the four bytes from the packet without swapping them.
pub type VipKey = u32;

/// Key of the `VIPS6` map: the IPv6 address's 16 bytes in wire order
/// (`addr.octets()`). Its value is a [`VipState`] like an IPv4 VIP's, so
/// ownership and the lease work the same for both families.
pub type Vip6Key = [u8; 16];

/// How the owner handles traffic to a VIP.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VipMode {
    /// The owner's own network stack serves the VIP (`XDP_PASS`).
    Local = 0,
    /// The owner steers TCP and UDP to backends chosen by Maglev (L2 direct
    /// server return); other protocols (ICMP) go to the local stack.
    Balance = 1,
}

/// Slots in a VIP's Maglev lookup table, built by the control plane and
/// read by the XDP program. A prime, as Maglev's permutations require.
///
/// Maglev wants the table much larger than the backend set (at least 100
/// times keeps the imbalance between backends under 1%, and a larger ratio
/// also lowers disruption). 65,537 (`2^16 + 1`) is 256 times
/// [`MAX_BACKENDS_PER_VIP`], so even a full VIP's backends differ by at
/// most one slot in 256 (0.4%). It costs 512 KiB per table in `MAGLEV` (8
/// bytes a slot) and about 5 ms to build for 256 backends in a release build.
pub const MAGLEV_TABLE_SIZE: u32 = 65_537;

/// Backends one balanced VIP may have (counting those of weight 0): what
/// [`MAGLEV_TABLE_SIZE`] is sized for. Distinct from [`MAX_BACKENDS`], the
/// ids all balanced VIPs share.
pub const MAX_BACKENDS_PER_VIP: u32 = 256;
const _: () = assert!(MAGLEV_TABLE_SIZE >= 100 * MAX_BACKENDS_PER_VIP);
const _: () = assert!(MAX_BACKENDS_PER_VIP <= MAX_BACKENDS);

/// Balanced VIPs one node can carry; each has two tables (see `MAGLEV`).
pub const MAX_BALANCED_VIPS: u32 = 16;

/// Entries in the `MAGLEV` array: two generations of one table per balanced VIP.
pub const MAGLEV_ENTRIES: u32 = MAX_BALANCED_VIPS * 2 * MAGLEV_TABLE_SIZE;

/// Backend ids are indexes into `BACKENDS`, shared by all balanced VIPs.
pub const MAX_BACKENDS: u32 = 4096;

/// A table slot with no backend: new flows for the VIP are dropped.
pub const NO_BACKEND: u32 = u32::MAX;

/// One slot of a Maglev table in the `MAGLEV` array. The kernel lays array
/// elements out 8 bytes apart whatever their size; the padding says so, and
/// keeps the memory-mapped view the control plane writes in step with it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MaglevSlot {
    pub backend_id: u32,
    pub _pad: u32,
}

/// Flows the connection table remembers (least recently used go first)
/// unless `conntrack_entries` says otherwise, and the size the object
/// declares. The daemon sizes the maps from its configuration at start-up;
/// the other `MAX_*` sizes the object declares are upper bounds, this one is
/// the default.
pub const CONNTRACK_ENTRIES: u32 = 262_144;

/// The range `conntrack_entries` may take. Each flow costs 88 bytes of
/// kernel memory (x86-64, measured with bpftool), so the default holds
/// 22 MiB and the top 1.4 GiB.
pub const MIN_CONNTRACK_ENTRIES: u32 = 1_024;
pub const MAX_CONNTRACK_ENTRIES: u32 = 16_777_216;
const _: () = assert!(MIN_CONNTRACK_ENTRIES <= CONNTRACK_ENTRIES);
const _: () = assert!(CONNTRACK_ENTRIES <= MAX_CONNTRACK_ENTRIES);

/// Where a balanced VIP's current table starts in the `MAGLEV` array.
#[inline(always)]
pub fn maglev_table_start(table_slot: u16, table_generation: u8) -> u32 {
    (table_slot as u32 * 2 + (table_generation & 1) as u32) * MAGLEV_TABLE_SIZE
}

/// Value of the `VIPS` map: who answers for the VIP, and until when.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipState {
    /// The node answers for the VIP only while the kernel's tick counter
    /// (`bpf_jiffies64()`) is below this. The control plane keeps pushing it
    /// forward; if it stops (hung or killed), the node falls silent by
    /// itself. Jiffies because reading them is one memory load, where a
    /// nanosecond clock costs a helper call on every packet.
    pub lease_deadline_jiffies: u64,
    /// Source MAC of ARP replies and Neighbour Advertisements for the VIP:
    /// the owning interface's MAC.
    pub mac: [u8; 6],
    /// 1 while this node owns the VIP, 0 otherwise.
    pub owned: u8,
    /// A [`VipMode`] value.
    pub mode: u8,
    /// Index into `VIP_COUNTERS`, 1..=MAX_VIPS.
    pub vip_id: u32,
    /// Balanced VIPs: which of the `MAX_BALANCED_VIPS` table pairs is theirs.
    pub table_slot: u16,
    /// Balanced VIPs: which table of the pair is live (0 or 1). The control
    /// plane fills the other one, then flips this in one entry update, so
    /// no packet ever reads a half-written table.
    pub table_generation: u8,
    /// `VIP_FLAG_*` bits.
    pub flags: u8,
}

/// A route VIP: the routers reach this node by its own address, so XDP
/// answers no ARP for the VIP (and drops requests for it, or the kernel
/// would answer for the address on the route device).
pub const VIP_FLAG_ROUTE: u8 = 1;

impl VipState {
    /// Whether this node answers for the VIP when the tick counter reads `now_jiffies`.
    #[inline(always)]
    pub fn answers(&self, now_jiffies: u64) -> bool {
        self.owned != 0 && now_jiffies < self.lease_deadline_jiffies
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
    /// IPv4 or IPv6 packets to the VIP handed to the local stack.
    pub ip_passed: u64,
    /// IPv4 or IPv6 packets to the VIP dropped because this node does not own it.
    pub ip_dropped_not_owner: u64,
    /// ARP replies or announcements, or Neighbour Advertisements, from
    /// another MAC claiming a VIP this node owns.
    pub conflicts_seen: u64,
    /// Frames too short or malformed to parse.
    pub malformed: u64,
    /// Balanced VIPs: packets sent on to a backend.
    pub steered: u64,
    /// Balanced VIPs: new flows dropped because no backend takes new flows.
    pub no_backend: u64,
    /// Route VIPs: ARP requests for the VIP dropped (no node answers them).
    pub arp_dropped_route: u64,
    /// IPv6 VIPs: Neighbour Solicitations answered by XDP.
    pub nd_replied: u64,
    /// IPv6 VIPs: Neighbour Solicitations dropped because this node does not
    /// own the VIP (or its lease ran out).
    pub nd_dropped_not_owner: u64,
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
        self.steered += other.steered;
        self.no_backend += other.no_backend;
        self.arp_dropped_route += other.arp_dropped_route;
        self.nd_replied += other.nd_replied;
        self.nd_dropped_not_owner += other.nd_dropped_not_owner;
    }
}

/// Value of the `BACKENDS` array: where to send a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// Destination MAC for steered frames (learned from the neighbour table).
    pub mac: [u8; 6],
    /// `BACKEND_*` flags.
    pub flags: u8,
    pub _pad: u8,
    /// The backend's address, IPv4 mapped into IPv6 (`::ffff:a.b.c.d`),
    /// wire order (for inspection only).
    pub addr: [u8; 16],
}

/// The backend is configured; tracked flows keep going to it.
pub const BACKEND_PRESENT: u8 = 1;
/// The backend takes new flows: healthy, not drained, MAC known.
pub const BACKEND_ACCEPTS_NEW: u8 = 2;

/// Key of the `CONNTRACK` map, and what a flow's table slot is hashed from:
/// a flow's 5-tuple as it arrives, addresses and ports in wire order. One
/// layout for both families: an IPv4 address is stored IPv4-mapped
/// (`::ffff:a.b.c.d`, RFC 4291 2.5.5.2), so a flow of one family can never
/// equal one of the other. Aligned to 4 so each address word is one load.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

/// The first 12 bytes of an IPv4-mapped IPv6 address.
const IPV4_MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// `addr` (an IPv4 address's bytes, wire order) IPv4-mapped into 16 bytes.
#[inline(always)]
pub fn ipv4_mapped(addr: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..12].copy_from_slice(&IPV4_MAPPED_PREFIX);
    out[12..].copy_from_slice(&addr);
    out
}

impl FlowKey {
    /// An IPv4 flow (addresses as they are on the wire).
    #[inline(always)]
    pub fn ipv4(src: [u8; 4], dst: [u8; 4], src_port: u16, dst_port: u16, protocol: u8) -> Self {
        Self {
            src_addr: ipv4_mapped(src),
            dst_addr: ipv4_mapped(dst),
            src_port,
            dst_port,
            protocol,
            _pad: [0; 3],
        }
    }

    /// An IPv6 flow.
    #[inline(always)]
    pub fn ipv6(src: [u8; 16], dst: [u8; 16], src_port: u16, dst_port: u16, protocol: u8) -> Self {
        Self {
            src_addr: src,
            dst_addr: dst,
            src_port,
            dst_port,
            protocol,
            _pad: [0; 3],
        }
    }

    /// Both addresses are IPv4-mapped.
    #[inline(always)]
    fn is_ipv4(&self) -> bool {
        word(&self.src_addr, 0)
            | word(&self.src_addr, 1)
            | word(&self.dst_addr, 0)
            | word(&self.dst_addr, 1)
            == 0
            && word(&self.src_addr, 2) == MAPPED_WORD
            && word(&self.dst_addr, 2) == MAPPED_WORD
    }

    /// A 32-bit hash of the 5-tuple (MurmurHash3's mixing), the same on
    /// every node, so a flow picks the same table slot whichever lbfo node
    /// owns the VIP. An IPv4 flow hashes its two 4-byte addresses only (the
    /// mapped prefix is the same for every IPv4 flow), which keeps IPv4
    /// hashes what they were before IPv6 was balanced; an IPv6 flow hashes
    /// all 32 bytes.
    #[inline(always)]
    pub fn hash(&self) -> u32 {
        #[inline(always)]
        fn round(h: u32, word: u32) -> u32 {
            let k = word
                .wrapping_mul(0xcc9e_2d51)
                .rotate_left(15)
                .wrapping_mul(0x1b87_3593);
            (h ^ k)
                .rotate_left(13)
                .wrapping_mul(5)
                .wrapping_add(0xe654_6b64)
        }
        let mut h = 0x6c62_666f; // "lbfo"
        if self.is_ipv4() {
            h = round(h, word(&self.src_addr, 3));
            h = round(h, word(&self.dst_addr, 3));
        } else {
            for i in 0..4 {
                h = round(h, word(&self.src_addr, i));
            }
            for i in 0..4 {
                h = round(h, word(&self.dst_addr, i));
            }
        }
        h = round(h, ((self.src_port as u32) << 16) | self.dst_port as u32);
        h = round(h, self.protocol as u32);
        h ^= 13;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

/// Word 2 of an IPv4-mapped address, read as [`word`] reads it.
const MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// The `i`th 4-byte word of an address, bytes in wire order read as a
/// native `u32` (as IPv4 addresses always were).
#[inline(always)]
fn word(addr: &[u8; 16], i: usize) -> u32 {
    u32::from_ne_bytes([
        addr[4 * i],
        addr[4 * i + 1],
        addr[4 * i + 2],
        addr[4 * i + 3],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv4 flows hash as they did when the key held 4-byte addresses, so
    /// nodes of either version pick the same table slot for a flow.
    #[test]
    fn ipv4_hashes_are_unchanged_by_the_16_byte_key() {
        let tcp = FlowKey::ipv4(
            [198, 51, 100, 7],
            [192, 0, 2, 100],
            40000u16.to_be(),
            80u16.to_be(),
            6,
        );
        let udp = FlowKey::ipv4(
            [203, 0, 113, 200],
            [192, 0, 2, 100],
            5353u16.to_be(),
            53u16.to_be(),
            17,
        );
        assert_eq!((tcp.hash(), udp.hash()), (0x5b02_000a, 0x52ee_bde3));
    }

    #[test]
    fn every_byte_of_an_ipv6_address_moves_the_hash() {
        let src = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x07,
        ];
        let dst = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
        ];
        let base = FlowKey::ipv6(src, dst, 1, 2, 6);
        for i in 0..16 {
            let mut moved = base;
            moved.src_addr[i] ^= 0x80;
            assert_ne!(moved.hash(), base.hash(), "source byte {i}");
            let mut moved = base;
            moved.dst_addr[i] ^= 0x80;
            assert_ne!(moved.hash(), base.hash(), "destination byte {i}");
        }
        // An IPv6 address that ends like a mapped IPv4 one is not one.
        let mut v6 = FlowKey::ipv4([198, 51, 100, 7], [192, 0, 2, 100], 1, 2, 6);
        v6.src_addr[0] = 0x20;
        assert!(!v6.is_ipv4());
    }
}

/// Per-CPU counters per backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct BackendCounters {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

impl BackendCounters {
    pub fn add(&mut self, other: &Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.new_flows += other.new_flows;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::VipState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Backend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MaglevSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BackendCounters {}
}
