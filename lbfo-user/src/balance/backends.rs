//! Balanced VIPs on the control-plane side: which backends take new flows,
//! their MACs, and the Maglev table the XDP program reads (built here, pure;
//! the daemon's executor writes it).
//!
//! Every node keeps its tables current, owner or not, so a node that takes
//! a VIP over steers from its first packet, and (with the same backends and
//! weights everywhere) steers every flow to the same backend as the node
//! before it.

use std::{collections::HashMap, net::IpAddr};

use lbfo_common::{BACKEND_ACCEPTS_NEW, BACKEND_PRESENT, Backend, MAGLEV_TABLE_SIZE, NO_BACKEND};

use crate::{arp::format_mac, balance::maglev, config::BackendConfig};

/// One backend of a balanced VIP.
#[derive(Debug, Clone)]
pub struct BackendState {
    pub address: IpAddr,
    pub weight: u32,
    /// Index into the `BACKENDS` map.
    pub id: u32,
    /// From the neighbour table; a backend without one cannot be reached.
    pub mac: Option<[u8; 6]>,
    /// All of its health checks pass (true when it has none).
    pub healthy: bool,
    /// Taken out by `lbfo drain`: keeps its flows, gets no new ones.
    pub drained: bool,
}

impl BackendState {
    /// A backend as it starts: an id, MAC unknown, not drained, healthy
    /// only if it has no checks (unproven checks count as failing, as for
    /// VIPs).
    fn new(config: &BackendConfig, ids: &mut BackendIds) -> Result<Self, String> {
        Ok(Self {
            address: config.address,
            weight: config.weight,
            id: ids
                .allocate()
                .ok_or_else(|| format!("more than {} backends in all", ids.limit))?,
            mac: None,
            healthy: config.checks.is_empty(),
            drained: false,
        })
    }

    pub fn accepts_new_flows(&self) -> bool {
        self.healthy && !self.drained && self.mac.is_some()
    }

    /// Why it takes no new flows, for status and logs.
    pub fn why_not(&self) -> Option<&'static str> {
        if self.drained {
            Some("drained")
        } else if !self.healthy {
            Some("unhealthy")
        } else if self.mac.is_none() {
            Some("MAC unknown (no ARP or Neighbour Discovery answer)")
        } else {
            None
        }
    }

    fn map_entry(&self) -> Backend {
        Backend {
            mac: self.mac.unwrap_or_default(),
            flags: BACKEND_PRESENT
                | if self.accepts_new_flows() {
                    BACKEND_ACCEPTS_NEW
                } else {
                    0
                },
            addr: match self.address {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            },
            ..Default::default()
        }
    }
}

/// What the XDP program needs to steer by a new table: every backend's map
/// entry, and the table for `generation` of pair `table_slot`.
#[derive(Debug, Clone, PartialEq)]
pub struct TableUpdate {
    pub table_slot: u16,
    pub generation: u8,
    pub backends: Vec<(u32, Backend)>,
    pub table: Vec<u32>,
}

/// A balanced VIP's backends and table.
#[derive(Debug, Clone)]
pub struct BalancedVip {
    /// Which pair of tables in `MAGLEV` is this VIP's.
    pub table_slot: u16,
    /// The live table of the pair.
    pub generation: u8,
    pub backends: Vec<BackendState>,
}

/// Hands out backend ids (indexes into `BACKENDS`), below the number of
/// entries the map was created with.
#[derive(Debug, Clone)]
pub struct BackendIds {
    limit: u32,
    next: u32,
    free: Vec<u32>,
    /// Given back during this reload: a packet may still be steered by an
    /// old table entry naming them, so they are reused from the next one.
    retiring: Vec<u32>,
}

impl BackendIds {
    /// Ids `0..limit`, all free.
    pub fn new(limit: u32) -> Self {
        debug_assert!(limit <= lbfo_common::MAX_BACKENDS);
        Self {
            limit,
            next: 0,
            free: Vec::new(),
            retiring: Vec::new(),
        }
    }

    /// How many ids there are in all.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn allocate(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        (self.next < self.limit).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Gives `id` back; it is reusable from the next reload on.
    pub fn retire(&mut self, id: u32) -> u32 {
        self.retiring.push(id);
        id
    }

    /// Ids retired by the previous reload become reusable.
    pub fn recycle(&mut self) {
        self.free.append(&mut self.retiring);
    }
}

impl BalancedVip {
    pub fn new(
        table_slot: u16,
        backends: &[BackendConfig],
        ids: &mut BackendIds,
    ) -> Result<Self, String> {
        let backends = backends
            .iter()
            .map(|b| BackendState::new(b, ids))
            .collect::<Result<_, String>>()?;
        Ok(Self {
            table_slot,
            generation: 0,
            backends,
        })
    }

    /// The next table for this VIP, in the idle generation of its pair. The
    /// executor writes the backends, then the table, then flips the VIP
    /// entry to the returned generation: the moment the XDP program starts
    /// reading the new table.
    ///
    /// Backends come first so one that stops taking new flows stops at
    /// once, even for packets still reading the old table.
    pub fn next_table(&mut self) -> TableUpdate {
        let eligible: Vec<&BackendState> = self
            .backends
            .iter()
            .filter(|b| b.accepts_new_flows())
            .collect();
        let input: Vec<maglev::Member> = eligible
            .iter()
            .map(|b| maglev::Member {
                addr: b.address,
                weight: b.weight,
            })
            .collect();
        let table: Vec<u32> = match maglev::build_table(&input, MAGLEV_TABLE_SIZE)
            .expect("config validation keeps backends unique and within limits")
        {
            Some(slots) => slots.iter().map(|&s| eligible[s as usize].id).collect(),
            None => vec![NO_BACKEND; MAGLEV_TABLE_SIZE as usize],
        };
        self.generation ^= 1;
        TableUpdate {
            table_slot: self.table_slot,
            generation: self.generation,
            backends: self
                .backends
                .iter()
                .map(|b| (b.id, b.map_entry()))
                .collect(),
            table,
        }
    }

    /// Takes a new backend list (reload): backends that stay keep their id,
    /// MAC, health and drain state; new ones get ids. Returns the ids of the
    /// ones that went, already retired: the caller marks them gone in the
    /// map, so their tracked flows are steered anew.
    pub fn update_backends(
        &mut self,
        configs: &[BackendConfig],
        ids: &mut BackendIds,
    ) -> Result<Vec<u32>, String> {
        let mut old = std::mem::take(&mut self.backends);
        for c in configs {
            match old.iter().position(|b| b.address == c.address) {
                Some(i) => {
                    let mut kept = old.swap_remove(i);
                    kept.weight = c.weight;
                    self.backends.push(kept);
                }
                None => self.backends.push(BackendState::new(c, ids)?),
            }
        }
        Ok(old.into_iter().map(|gone| ids.retire(gone.id)).collect())
    }

    /// Every backend retired (the VIP left the configuration); returns their
    /// ids for the caller to mark gone in the map.
    pub fn remove_all(&mut self, ids: &mut BackendIds) -> Vec<u32> {
        self.backends.drain(..).map(|b| ids.retire(b.id)).collect()
    }

    /// Takes MACs from a neighbour table snapshot; true if any changed. A
    /// MAC that merely ages out of the table is still the best we know, so
    /// only a newer one replaces it (a dead backend is the checks' business).
    pub fn learn_macs(&mut self, neighbours: &HashMap<IpAddr, [u8; 6]>) -> bool {
        let mut changed = false;
        for b in &mut self.backends {
            if let Some(&mac) = neighbours.get(&b.address)
                && b.mac != Some(mac)
            {
                tracing::info!(backend = %b.address, "backend MAC is {}", format_mac(&mac));
                b.mac = Some(mac);
                changed = true;
            }
        }
        changed
    }

    /// Backends whose MAC is still unknown.
    pub fn unresolved(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.backends
            .iter()
            .filter(|b| b.mac.is_none())
            .map(|b| b.address)
    }
}
