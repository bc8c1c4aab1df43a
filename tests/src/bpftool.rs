//! The maps of a loaded XDP program as `bpftool` (Debian package bpftool)
//! reports them: what the kernel created, read from outside lbfo.

use anyhow::{Context as _, Result, bail};

/// One map, from `bpftool map show id ID -j`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapInfo {
    /// The kernel's name: at most 15 characters (`BACKEND_COUNTERS`
    /// shows as `BACKEND_COUNTER`).
    pub name: String,
    pub kind: String,
    pub max_entries: u64,
    /// Kernel memory the map holds.
    pub bytes_memlock: u64,
}

fn bpftool_json(args: &[&str]) -> Result<serde_json::Value> {
    let out = std::process::Command::new("bpftool")
        .args(args)
        .arg("-j")
        .output()
        .context("running bpftool (Debian package bpftool)")?;
    if !out.status.success() {
        bail!(
            "bpftool {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("bpftool {args:?} output"))
}

/// Every map the program with kernel id `prog_id` uses. BPF objects are
/// not confined to network namespaces, so the program id (from `lbfo
/// status`) is what tells one daemon's maps from another's.
pub fn program_maps(prog_id: u32) -> Result<Vec<MapInfo>> {
    let prog = bpftool_json(&["prog", "show", "id", &prog_id.to_string()])?;
    let ids = prog["map_ids"]
        .as_array()
        .with_context(|| format!("bpftool shows no map_ids for program {prog_id}: {prog}"))?;
    ids.iter()
        .map(|id| {
            let map = bpftool_json(&["map", "show", "id", &id.to_string()])?;
            let field = |name: &str| {
                map[name]
                    .as_u64()
                    .with_context(|| format!("bpftool map {id} has no {name}: {map}"))
            };
            Ok(MapInfo {
                name: map["name"].as_str().unwrap_or_default().to_string(),
                kind: map["type"].as_str().unwrap_or_default().to_string(),
                max_entries: field("max_entries")?,
                bytes_memlock: field("bytes_memlock")?,
            })
        })
        .collect()
}
