//! The route device: where route VIPs are announced from.
//!
//! lbfo creates a TUN device (`route_device`, `lbfo0` by default) and holds
//! its file descriptor for the daemon's life. It is not made persistent
//! (no TUNSETPERSIST), so the kernel deletes it, with every address on it,
//! the moment the process ends, however it ends: `kill -9`, a crash, the
//! systemd watchdog. The routing daemon (BIRD's `protocol direct`, FRR's
//! `redistribute connected`) sees the addresses go and withdraws the routes
//! at once, without waiting for a lease or a BGP hold timer.
//!
//! An announced route VIP is a /32 on the device, added and removed over
//! rtnetlink by the [`Owner`](crate::ownership::Owner). Nothing is ever read
//! from or written to the device: it only carries addresses.
//!
//! The one ioctl (TUNSETIFF) is made here directly: the TUN crates also
//! configure addresses and queues through ioctls of their own, where lbfo
//! adds addresses with its rtnetlink tag, and they would not refuse a
//! device that already exists, which lbfo must (see [`RouteDevice::create`]).

use std::{fs::File, io, os::fd::AsRawFd as _};

#[derive(Debug, thiserror::Error)]
pub enum RouteDeviceError {
    #[error(
        "cannot open /dev/net/tun for route_device {name}: {source} (does this kernel have TUN devices?)"
    )]
    Open { name: String, source: io::Error },
    #[error(
        "route_device {name} already exists (another lbfo holds it, or it was made by hand, and a device lbfo did not create would outlive lbfo and keep its routes announced); remove it with `ip link del {name}` or name another route_device"
    )]
    Exists { name: String },
    #[error("cannot create route_device {name}: {source}")]
    Create { name: String, source: io::Error },
}

/// The TUN device this daemon holds open; dropping it (or the process
/// ending) deletes the device.
#[derive(Debug)]
pub struct RouteDevice {
    name: String,
    index: u32,
    /// Holding it keeps the device.
    _file: File,
}

impl RouteDevice {
    /// Creates `name` as a TUN device of this process. A device of that
    /// name that already exists is refused (IFF_TUN_EXCL), whatever it is:
    /// attaching to a persistent one would leave its routes announced
    /// after lbfo is gone.
    pub fn create(name: &str) -> Result<RouteDevice, RouteDeviceError> {
        let file = File::options()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|source| RouteDeviceError::Open {
                name: name.into(),
                source,
            })?;
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= request.ifr_name.len() {
            return Err(RouteDeviceError::Create {
                name: name.into(),
                source: io::Error::from_raw_os_error(libc::ENAMETOOLONG),
            });
        }
        for (to, from) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *to = from as libc::c_char;
        }
        request.ifr_ifru.ifru_flags =
            (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_TUN_EXCL) as libc::c_short;
        // SAFETY: TUNSETIFF reads one ifreq, which lives across the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &request) };
        if rc != 0 {
            let source = io::Error::last_os_error();
            return Err(match source.raw_os_error() {
                Some(libc::EBUSY) | Some(libc::EEXIST) | Some(libc::EINVAL) => {
                    RouteDeviceError::Exists { name: name.into() }
                }
                _ => RouteDeviceError::Create {
                    name: name.into(),
                    source,
                },
            });
        }
        let index = nix::net::if_::if_nametoindex(name).map_err(|e| RouteDeviceError::Create {
            name: name.into(),
            source: e.into(),
        })?;
        Ok(RouteDevice {
            name: name.into(),
            index,
            _file: file,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn index(&self) -> u32 {
        self.index
    }
}
