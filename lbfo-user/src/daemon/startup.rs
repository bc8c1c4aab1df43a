//! Start-up steps that touch the system: the interface lock, the VRRP
//! source address, stale addresses and attaching XDP.

use std::{fs::File, net::IpAddr, os::unix::fs::MetadataExt as _, path::PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::{
    config::{Config, VipAddress, XdpMode},
    datapath::{Datapath, PROGRAM_NAME},
    netlink::{Interface, Netlink, XdpAttachMode},
    vrrp::Sources,
};

/// What elected VIPs need of the interface, checked at start and on every
/// reload: advertisements go out from the node's own address on it (IPv4:
/// its first IPv4 address not a VIP; IPv6: its link-local address, RFC 5798
/// 5.1.2.1), so each family with an elected VIP must have one, and priority
/// 255 belongs to the node that has the VIP address configured itself.
pub(super) async fn election_sources(
    config: &Config,
    netlink: &Netlink,
    iface: &Interface,
) -> Result<Sources> {
    let elected = |ipv6: bool| {
        config
            .vips
            .iter()
            .any(|v| v.vrrp.vrid.is_some() && v.is_ipv6() == ipv6)
    };
    if !elected(false) && !elected(true) {
        return Ok(Sources::default());
    }
    let vip_addresses: Vec<IpAddr> = config.all_addresses().collect();
    let addresses = netlink.addresses(iface.index).await?;
    let own = || {
        addresses
            .iter()
            .filter(|a| !a.added_by_lbfo && !vip_addresses.contains(&a.addr))
    };
    let mut sources = Sources::default();
    if elected(false) {
        sources.ipv4 = Some(
            own()
                .find_map(|a| match a.addr {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .with_context(|| {
                    format!(
                        "interface {} has no IPv4 address of its own; VRRP sends advertisements from it",
                        iface.name
                    )
                })?,
        );
    }
    if elected(true) {
        sources.ipv6 = Some(
            own()
                .find_map(|a| match a.addr {
                    IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(v6),
                    _ => None,
                })
                .with_context(|| {
                    format!(
                        "interface {} has no IPv6 link-local address; VRRP for IPv6 sends advertisements from it",
                        iface.name
                    )
                })?,
        );
    }
    for vip in config.vips.iter().filter(|v| v.vrrp.vrid.is_some()) {
        let missing = vip.addresses.iter().find(|vip_address| {
            !addresses
                .iter()
                .any(|a| a.addr == vip_address.addr && !a.added_by_lbfo)
        });
        if let (255, Some(missing)) = (vip.vrrp.priority, missing) {
            bail!(
                "vip {:?}: priority 255 is for the node that owns {} (configured on {}), and this node does not",
                vip.name,
                missing.addr,
                iface.name
            );
        }
    }
    Ok(sources)
}

/// One daemon per interface: a lock file named for the network namespace and
/// interface index, held (flock) for the daemon's life and released by the
/// kernel however the daemon ends.
pub(super) fn lock_interface(iface: &Interface) -> Result<nix::fcntl::Flock<File>> {
    let netns = std::fs::metadata("/proc/self/ns/net")
        .context("reading /proc/self/ns/net")?
        .ino();
    let dir = PathBuf::from("/run/lbfo/locks");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("netns{netns}-if{}.lock", iface.index));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    let file = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another lbfo daemon{} is already running on interface {}",
                holder
                    .trim()
                    .parse::<u32>()
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default(),
                iface.name
            );
        }
        Err((_, e)) => bail!("cannot lock {}: {e}", path.display()),
    };
    let _ = std::fs::write(&path, format!("{}\n", std::process::id()));
    Ok(file)
}

/// Addresses lbfo added before it was killed are stale: this daemon starts
/// with every VIP not owned, so it removes them. Returns the VIP addresses
/// an operator configured by hand, which lbfo never removes.
pub(super) async fn remove_stale_addresses(
    netlink: &Netlink,
    iface: &Interface,
    vips: &[IpAddr],
) -> Result<Vec<IpAddr>> {
    let mut by_hand = Vec::new();
    for a in netlink.addresses(iface.index).await? {
        if a.added_by_lbfo {
            tracing::warn!(address = %a.addr, "removing VIP address left on {} by an lbfo that did not shut down cleanly", iface.name);
            let stale = VipAddress {
                addr: a.addr,
                prefix_len: a.prefix_len,
            };
            netlink.remove_address(iface.index, stale).await?;
        } else if vips.contains(&a.addr) {
            by_hand.push(a.addr);
        }
    }
    Ok(by_hand)
}

/// Attaches the XDP program in the configured mode. A program left attached
/// by an lbfo that was killed is replaced; anyone else's program is not.
pub(super) async fn attach(
    netlink: &Netlink,
    datapath: &mut Datapath,
    iface: &Interface,
    mode: XdpMode,
) -> Result<XdpAttachMode> {
    if let Some(existing) = iface.xdp {
        let name = program_name(existing.prog_id);
        if name.as_deref() != Some(PROGRAM_NAME) {
            bail!(
                "interface {} already has XDP program id {} ({}) attached; lbfo will not replace another program",
                iface.name,
                existing.prog_id,
                name.unwrap_or_else(|| "unknown name".into())
            );
        }
        tracing::warn!(
            interface = %iface.name,
            "replacing XDP program id {} left by an lbfo that did not shut down cleanly",
            existing.prog_id
        );
        netlink
            .detach_xdp(iface.index, existing.mode)
            .await
            .with_context(|| format!("detaching stale XDP program from {}", iface.name))?;
    }
    let index = iface.index;
    let fd = datapath.program_fd().try_clone_to_owned()?;
    let try_mode = |m: XdpAttachMode| {
        let netlink = netlink.clone();
        let fd = &fd;
        async move { netlink.attach_xdp(index, fd, m, false).await.map(|()| m) }
    };
    let attached = match mode {
        XdpMode::Native => try_mode(XdpAttachMode::Native).await,
        XdpMode::Generic => try_mode(XdpAttachMode::Generic).await,
        XdpMode::Auto => match try_mode(XdpAttachMode::Native).await {
            Ok(m) => Ok(m),
            Err(e) => {
                tracing::info!(interface = %iface.name, "native XDP not available ({e}); trying generic mode");
                try_mode(XdpAttachMode::Generic).await
            }
        },
    };
    attached.map_err(|e| {
        anyhow::anyhow!(
            "cannot attach XDP to {} in {mode:?} mode: {e} (does this kernel and driver support XDP?)",
            iface.name
        )
    })
}

/// The name of a loaded BPF program, by id.
fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_string))
}
