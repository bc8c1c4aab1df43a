//! The loaded XDP program and its maps. The daemon holds exactly one
//! [`Datapath`] and is the only writer of its maps.

use std::{net::Ipv4Addr, os::fd::AsFd as _, os::fd::BorrowedFd};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray},
    programs::Xdp,
};
use lbfo_common::{VipCounters, VipKey, VipState};

/// The compiled XDP object, embedded at build time.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("LBFO_EBPF_OBJECT"));

/// Name of the XDP entry point (also its name in the kernel, e.g. in `bpftool prog`).
pub const PROGRAM_NAME: &str = "lbfo_xdp";

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "cannot load the XDP program into the kernel (is this kernel built with BPF and XDP support, and are you root?): {0}"
    )]
    Load(String),
    #[error("XDP map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
}

pub struct Datapath {
    ebpf: Ebpf,
    vips: HashMap<MapData, VipKey, VipState>,
    counters: PerCpuArray<MapData, VipCounters>,
    prog_id: u32,
}

/// The map key for a VIP address (wire-order bytes, see [`VipKey`]).
pub fn vip_key(addr: Ipv4Addr) -> VipKey {
    u32::from_ne_bytes(addr.octets())
}

impl Datapath {
    /// Loads the embedded program and creates its maps (empty).
    pub fn load() -> Result<Self, DatapathError> {
        // A failure here only means memory is accounted to the cgroup instead.
        let _ = raise_memlock_limit();
        let load = |e: &dyn std::fmt::Display| DatapathError::Load(e.to_string());
        let mut ebpf = EbpfLoader::new().load(XDP_OBJECT).map_err(|e| load(&e))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| load(&"object has no lbfo_xdp program"))?
            .try_into()
            .map_err(|e| load(&e))?;
        program.load().map_err(|e| load(&e))?;
        let prog_id = program.info().map_err(|e| load(&e))?.id();

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| DatapathError::Load(format!("object has no {name} map")))
        };
        let vips =
            HashMap::try_from(take(&mut ebpf, "VIPS")?).map_err(|source| DatapathError::Map {
                map: "VIPS",
                source,
            })?;
        let counters =
            PerCpuArray::try_from(take(&mut ebpf, "VIP_COUNTERS")?).map_err(|source| {
                DatapathError::Map {
                    map: "VIP_COUNTERS",
                    source,
                }
            })?;
        Ok(Self {
            ebpf,
            vips,
            counters,
            prog_id,
        })
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

    /// Writes the whole entry for a VIP at once; XDP reads either the old or
    /// the new entry, never a mix.
    pub fn set_vip(&mut self, addr: Ipv4Addr, state: &VipState) -> Result<(), DatapathError> {
        self.vips
            .insert(&vip_key(addr), state, 0)
            .map_err(|source| DatapathError::Map {
                map: "VIPS",
                source,
            })
    }

    pub fn remove_vip(&mut self, addr: Ipv4Addr) -> Result<(), DatapathError> {
        match self.vips.remove(&vip_key(addr)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(DatapathError::Map {
                map: "VIPS",
                source,
            }),
        }
    }

    pub fn vip(&self, addr: Ipv4Addr) -> Option<VipState> {
        self.vips.get(&vip_key(addr), 0).ok()
    }

    /// Counters for a VIP id, summed over CPUs.
    pub fn counters(&self, vip_id: u32) -> Result<VipCounters, DatapathError> {
        let per_cpu = self
            .counters
            .get(&vip_id, 0)
            .map_err(|source| DatapathError::Map {
                map: "VIP_COUNTERS",
                source,
            })?;
        let mut sum = VipCounters::default();
        for c in per_cpu.iter() {
            sum.add(c);
        }
        Ok(sum)
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
