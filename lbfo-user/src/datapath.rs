//! The loaded XDP program and its maps. The daemon holds exactly one
//! [`Datapath`] and is the only writer of its maps.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::Xdp,
};
use lbfo_common::{
    Backend, BackendCounters, FlowKey, MAGLEV_TABLE_SIZE, MaglevSlot, Vip6Key, VipCounters, VipKey,
    VipState, maglev_table_start,
};

use crate::core::Capacity;

/// The compiled XDP object, embedded at build time.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("LBFO_EBPF_OBJECT"));

const CLOCK_PROGRAM: &str = "lbfo_clock";

/// Name of the XDP entry point (also its name in the kernel, e.g. in `bpftool prog`).
pub const PROGRAM_NAME: &str = "lbfo_xdp";

/// What went wrong with the XDP program or its maps. Only [`Load`] is about
/// start-up; the others happen while the program runs and name the map or
/// program, the operation and the kernel's answer.
///
/// Each message is complete on one line: aya's errors leave the OS error to
/// their `source()`, so it is written into the message here instead of being
/// kept as a source (which `{:#}` would print a second time).
///
/// [`Load`]: DatapathError::Load
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "cannot load the XDP program into the kernel (is this kernel built with BPF and XDP support, and are you root?): {0}"
    )]
    Load(String),
    #[error("XDP map {map}: {op}: {}", with_causes(.error))]
    Map {
        map: &'static str,
        /// What was being done, like "writing an entry".
        op: &'static str,
        error: aya::maps::MapError,
    },
    /// A run of one of lbfo's programs through `BPF_PROG_TEST_RUN`.
    #[error("running XDP program {program} ({purpose}): {}", with_causes(.error))]
    TestRun {
        program: &'static str,
        purpose: &'static str,
        error: aya::programs::ProgramError,
    },
    #[error(
        "XDP map MAGLEV has tables for {capacity} balanced VIPs; table slot {table_slot} is past them"
    )]
    NoTable { table_slot: u16, capacity: u32 },
    #[error("cannot memory-map {len} bytes at offset {offset} of XDP map {map}: {error}")]
    Mmap {
        map: &'static str,
        offset: usize,
        len: usize,
        error: std::io::Error,
    },
    /// Per-CPU maps take one value per possible CPU.
    #[error("cannot count the possible CPUs (reading {path}): {error}")]
    CpuCount {
        path: &'static str,
        error: std::io::Error,
    },
    #[error("building per-CPU values for XDP map {map}: {error}")]
    PerCpuValues {
        map: &'static str,
        error: std::io::Error,
    },
}

/// `error` and its causes on one line, each cause once.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    text
}

pub struct Datapath {
    ebpf: Ebpf,
    capacity: Capacity,
    vips: HashMap<MapData, VipKey, VipState>,
    vips6: HashMap<MapData, Vip6Key, VipState>,
    counters: PerCpuArray<MapData, VipCounters>,
    maglev: MappedTables,
    backends: Array<MapData, Backend>,
    conntrack: HashMap<MapData, FlowKey, u32>,
    backend_counters: PerCpuArray<MapData, BackendCounters>,
    prog_id: u32,
}

/// Map operations for [`DatapathError::Map`] that recur.
const OPEN: &str = "opening it as its expected type";
const READ: &str = "reading an entry";

fn map_error(map: &'static str, op: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |error| DatapathError::Map { map, op, error }
}

/// The map key for a VIP address (wire-order bytes, see [`VipKey`]).
pub fn vip_key(addr: Ipv4Addr) -> VipKey {
    u32::from_ne_bytes(addr.octets())
}

/// The map that holds `addr`'s entry.
fn vips_map(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() { "VIPS" } else { "VIPS6" }
}

/// How many entries each map sized by the configuration is created with.
/// The kernel refuses maps of no entries, so a node without balancing gets
/// one of each: nothing writes them, and the XDP program only reaches them
/// through lookups, which fail past the end (a `VIPS` entry in balance mode
/// never exists without a table pair for it). `VIPS`,
/// `VIPS6` and `VIP_COUNTERS` keep the sizes the object declares: 256 VIPs
/// of each family cost under 100 KiB.
pub fn map_entries(capacity: &Capacity) -> [(&'static str, u32); 4] {
    [
        ("MAGLEV", capacity.balanced_vips * 2 * MAGLEV_TABLE_SIZE),
        ("BACKENDS", capacity.backends),
        ("BACKEND_COUNTERS", capacity.backends),
        ("CONNTRACK", capacity.conntrack_entries),
    ]
    .map(|(name, entries)| (name, entries.max(1)))
}

impl Datapath {
    /// Loads the embedded program and creates its maps (empty), sized for
    /// `capacity` (see [`map_entries`]).
    pub fn load(capacity: Capacity) -> Result<Self, DatapathError> {
        // A failure here only means memory is accounted to the cgroup instead.
        let _ = raise_memlock_limit();
        let load = |e: &dyn std::error::Error| DatapathError::Load(with_causes(e));
        let missing = |what: &str| DatapathError::Load(format!("object has no {what}"));
        let mut loader = EbpfLoader::new();
        for (name, entries) in map_entries(&capacity) {
            loader.map_max_entries(name, entries);
        }
        let mut ebpf = loader.load(XDP_OBJECT).map_err(|e| load(&e))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| missing("lbfo_xdp program"))?
            .try_into()
            .map_err(|e| load(&e))?;
        program.load().map_err(|e| load(&e))?;
        let prog_id = program.info().map_err(|e| load(&e))?.id();
        // Reads the tick counter leases are written in (see `lbfo_clock`).
        let clock: &mut Xdp = ebpf
            .program_mut(CLOCK_PROGRAM)
            .ok_or_else(|| missing("lbfo_clock program"))?
            .try_into()
            .map_err(|e| load(&e))?;
        clock.load().map_err(|e| load(&e))?;

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| DatapathError::Load(format!("object has no {name} map")))
        };
        let vips = HashMap::try_from(take(&mut ebpf, "VIPS")?).map_err(map_error("VIPS", OPEN))?;
        let vips6 =
            HashMap::try_from(take(&mut ebpf, "VIPS6")?).map_err(map_error("VIPS6", OPEN))?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, "VIP_COUNTERS")?)
            .map_err(map_error("VIP_COUNTERS", OPEN))?;
        let maglev = match take(&mut ebpf, "MAGLEV")? {
            aya::maps::Map::Array(data) => MappedTables::new(data)?,
            _ => return Err(DatapathError::Load("MAGLEV is not an array".into())),
        };
        let backends =
            Array::try_from(take(&mut ebpf, "BACKENDS")?).map_err(map_error("BACKENDS", OPEN))?;
        let conntrack = HashMap::try_from(take(&mut ebpf, "CONNTRACK")?)
            .map_err(map_error("CONNTRACK", OPEN))?;
        let backend_counters = PerCpuArray::try_from(take(&mut ebpf, "BACKEND_COUNTERS")?)
            .map_err(map_error("BACKEND_COUNTERS", OPEN))?;
        tracing::info!(
            "XDP maps sized for {} balanced VIPs, {} backends and {} tracked flows",
            capacity.balanced_vips,
            capacity.backends,
            capacity.conntrack_entries
        );
        Ok(Self {
            ebpf,
            capacity,
            vips,
            vips6,
            counters,
            maglev,
            backends,
            conntrack,
            backend_counters,
            prog_id,
        })
    }

    /// What the maps were sized for.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// The kernel's id for the loaded program.
    pub fn prog_id(&self) -> u32 {
        self.prog_id
    }

    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .expect("checked at load")
            .try_into()
            .expect("checked at load")
    }

    /// The program's file descriptor, for attaching it.
    pub fn program_fd(&mut self) -> BorrowedFd<'_> {
        self.program().fd().expect("program is loaded").as_fd()
    }

    /// The kernel's tick counter now, as the XDP program reads it.
    pub fn jiffies(&self) -> Result<u64, DatapathError> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let frame = [0u8; 14];
        let mut out = [0u8; 14];
        let clock: &Xdp = self
            .ebpf
            .program(CLOCK_PROGRAM)
            .expect("checked at load")
            .try_into()
            .expect("checked at load");
        clock
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
            .map_err(|error| DatapathError::TestRun {
                program: CLOCK_PROGRAM,
                purpose: "reading the kernel's tick counter",
                error,
            })?;
        Ok(u64::from_ne_bytes(out[..8].try_into().expect("8 bytes")))
    }

    /// Writes the whole entry for a VIP at once (into `VIPS` or `VIPS6`, by
    /// its family); XDP reads either the old or the new entry, never a mix.
    pub fn set_vip(
        &mut self,
        addr: impl Into<IpAddr>,
        state: &VipState,
    ) -> Result<(), DatapathError> {
        let addr = addr.into();
        let written = match addr {
            IpAddr::V4(v4) => self.vips.insert(&vip_key(v4), state, 0),
            IpAddr::V6(v6) => self.vips6.insert(&v6.octets(), state, 0),
        };
        written.map_err(map_error(vips_map(addr), "writing an entry"))
    }

    pub fn remove_vip(&mut self, addr: impl Into<IpAddr>) -> Result<(), DatapathError> {
        let addr = addr.into();
        let removed = match addr {
            IpAddr::V4(v4) => self.vips.remove(&vip_key(v4)),
            IpAddr::V6(v6) => self.vips6.remove(&v6.octets()),
        };
        match removed {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_error(vips_map(addr), "removing an entry")(e)),
        }
    }

    pub fn vip(&self, addr: impl Into<IpAddr>) -> Option<VipState> {
        match addr.into() {
            IpAddr::V4(v4) => self.vips.get(&vip_key(v4), 0).ok(),
            IpAddr::V6(v6) => self.vips6.get(&v6.octets(), 0).ok(),
        }
    }

    /// Counters for a VIP id, summed over CPUs.
    pub fn counters(&self, vip_id: u32) -> Result<VipCounters, DatapathError> {
        let per_cpu = self
            .counters
            .get(&vip_id, 0)
            .map_err(map_error("VIP_COUNTERS", READ))?;
        let mut sum = VipCounters::default();
        for c in per_cpu.iter() {
            sum.add(c);
        }
        Ok(sum)
    }

    /// Zeroes a VIP id's counters (the id is being given to another VIP).
    pub fn reset_counters(&mut self, vip_id: u32) -> Result<(), DatapathError> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(path, error)| DatapathError::CpuCount { path, error })?;
        let zeros =
            aya::maps::PerCpuValues::try_from(vec![VipCounters::default(); cpus.get() as usize])
                .map_err(|error| DatapathError::PerCpuValues {
                    map: "VIP_COUNTERS",
                    error,
                })?;
        self.counters
            .set(vip_id, zeros, 0)
            .map_err(map_error("VIP_COUNTERS", "zeroing an entry"))
    }

    /// Writes one whole Maglev table (backend ids) into a VIP's table slot
    /// and generation. XDP keeps reading the other generation until the VIP
    /// entry is flipped to this one.
    pub fn write_table(
        &mut self,
        table_slot: u16,
        generation: u8,
        table: &[u32],
    ) -> Result<(), DatapathError> {
        assert_eq!(table.len(), MAGLEV_TABLE_SIZE as usize, "Maglev table size");
        if u32::from(table_slot) >= self.capacity.balanced_vips {
            return Err(DatapathError::NoTable {
                table_slot,
                capacity: self.capacity.balanced_vips,
            });
        }
        self.maglev
            .write(maglev_table_start(table_slot, generation) as usize, table)
    }

    /// Publishes a balanced VIP's next table: every backend's entry first
    /// (so one that stops taking new flows stops at once, even for packets
    /// still reading the old table), then the table into its generation. The
    /// VIP entry is flipped to that generation afterwards, by the caller.
    pub fn publish(&mut self, update: &crate::balance::TableUpdate) -> Result<(), DatapathError> {
        for (id, backend) in &update.backends {
            self.set_backend(*id, backend)?;
        }
        self.write_table(update.table_slot, update.generation, &update.table)
    }

    pub fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), DatapathError> {
        self.backends
            .set(id, backend, 0)
            .map_err(map_error("BACKENDS", "writing an entry"))
    }

    pub fn backend(&self, id: u32) -> Result<Backend, DatapathError> {
        self.backends
            .get(&id, 0)
            .map_err(map_error("BACKENDS", READ))
    }

    /// Counters for a backend id, summed over CPUs.
    pub fn backend_counters(&self, id: u32) -> Result<BackendCounters, DatapathError> {
        let per_cpu = self
            .backend_counters
            .get(&id, 0)
            .map_err(map_error("BACKEND_COUNTERS", READ))?;
        let mut sum = BackendCounters::default();
        for c in per_cpu.iter() {
            sum.add(c);
        }
        Ok(sum)
    }

    /// Tracked flows per backend id (walks the connection table).
    pub fn active_flows(&self) -> std::collections::HashMap<u32, u64> {
        let mut flows = std::collections::HashMap::new();
        for (_, backend_id) in self.conntrack.iter().filter_map(Result::ok) {
            *flows.entry(backend_id).or_default() += 1;
        }
        flows
    }

    /// The backend a flow is tracked to, if any.
    pub fn tracked(&self, flow: &FlowKey) -> Option<u32> {
        self.conntrack.get(flow, 0).ok()
    }

    /// Forgets every tracked flow.
    pub fn clear_conntrack(&mut self) -> Result<(), DatapathError> {
        let keys: Vec<FlowKey> = self.conntrack.keys().filter_map(Result::ok).collect();
        for key in keys {
            match self.conntrack.remove(&key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_error("CONNTRACK", "removing an entry")(e)),
            }
        }
        Ok(())
    }
}

/// Writes into the `MAGLEV` array (created BPF_F_MMAPABLE) through a
/// memory mapping of just the pages a table covers, made for the write and
/// undone after it: one copy instead of 65,537 system calls, and no resident
/// mapping of the whole array in between.
struct MappedTables {
    map: MapData,
}

impl MappedTables {
    fn new(map: MapData) -> Result<Self, DatapathError> {
        Ok(Self { map })
    }

    /// Writes backend ids into consecutive slots starting at `first_slot`.
    fn write(&mut self, first_slot: usize, backend_ids: &[u32]) -> Result<(), DatapathError> {
        const PAGE: usize = 4096;
        let slot = std::mem::size_of::<MaglevSlot>();
        let start = first_slot * slot;
        let end = start + backend_ids.len() * slot;
        let map_start = start / PAGE * PAGE;
        let map_len = end.div_ceil(PAGE) * PAGE - map_start;
        // SAFETY: maps pages of a BPF array fd created with BPF_F_MMAPABLE,
        // inside its size (`write_table` checks the table slot against it).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.map.fd().as_fd().as_raw_fd(),
                map_start as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DatapathError::Mmap {
                map: "MAGLEV",
                offset: map_start,
                len: map_len,
                error: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: the mapping covers [map_start, map_start + map_len), which
        // contains every slot written here; MaglevSlot is 8-byte aligned data.
        let slots = unsafe {
            std::slice::from_raw_parts_mut(
                ptr.cast::<u8>().add(start - map_start).cast::<MaglevSlot>(),
                backend_ids.len(),
            )
        };
        for (slot, id) in slots.iter_mut().zip(backend_ids) {
            slot.backend_id = *id;
        }
        // SAFETY: unmapping exactly what was mapped above.
        unsafe { libc::munmap(ptr, map_len) };
        Ok(())
    }
}

fn raise_memlock_limit() -> std::io::Result<()> {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io;

    use aya::{maps::MapError, programs::ProgramError, sys::SyscallError};

    use super::*;

    fn eperm(call: &'static str) -> SyscallError {
        SyscallError {
            call,
            io_error: io::Error::from_raw_os_error(libc::EPERM),
        }
    }

    #[test]
    fn runtime_failures_name_what_failed_and_the_os_error_on_one_line() {
        let os_error = io::Error::from_raw_os_error(libc::EPERM).to_string();
        let cases = [
            (
                DatapathError::TestRun {
                    program: CLOCK_PROGRAM,
                    purpose: "reading the kernel's tick counter",
                    error: ProgramError::SyscallError(eperm("bpf_prog_test_run")),
                },
                "running XDP program lbfo_clock (reading the kernel's tick counter): \
                 `bpf_prog_test_run` failed",
            ),
            (
                DatapathError::Map {
                    map: "VIPS",
                    op: "writing an entry",
                    error: MapError::SyscallError(eperm("bpf_map_update_elem")),
                },
                "XDP map VIPS: writing an entry: `bpf_map_update_elem` failed",
            ),
            (
                DatapathError::Mmap {
                    map: "MAGLEV",
                    offset: 4096,
                    len: 528_384,
                    error: io::Error::from_raw_os_error(libc::EPERM),
                },
                "cannot memory-map 528384 bytes at offset 4096 of XDP map MAGLEV",
            ),
        ];
        for (error, what) in cases {
            let message = error.to_string();
            assert_eq!(
                message,
                format!("{what}: {os_error}"),
                "the message must say what failed and the OS error, once"
            );
            assert!(
                !message.contains("load") && !message.contains('\n'),
                "a runtime failure is not a load failure, on one line: {message:?}"
            );
            assert!(
                std::error::Error::source(&error).is_none(),
                "the OS error is in the message; as a source too, {{:#}} would print it twice"
            );
        }
    }

    #[test]
    fn causes_are_joined_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading: {0}")]
        struct Repeats(#[source] io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("reading")]
        struct Leaves(#[source] io::Error);
        let enoent = || io::Error::from_raw_os_error(libc::ENOENT);
        let expected = format!("reading: {}", enoent());
        assert_eq!(with_causes(&Repeats(enoent())), expected);
        assert_eq!(with_causes(&Leaves(enoent())), expected);
    }
}
