//! The TUN device the decapsulated packets are written to, where the local transparent proxy
//! (nftables DNAT to Squid's intercept port, for one) picks them up.

use crate::sys;
use anyhow::{Context, Result};
use std::fs::File;

/// Creates the TUN device, brings it up and turns reverse-path filtering off for it (the inner
/// packets' sources are reached through the normal interfaces, not the TUN). Returns the device
/// and the name the kernel gave it.
pub fn setup_tun(name: &str) -> Result<(File, String)> {
    let (fd, actual) = sys::open_tun(name).map_err(|e| {
        let fix = match e.kind() {
            std::io::ErrorKind::PermissionDenied => "; swcache needs root (CAP_NET_ADMIN)",
            std::io::ErrorKind::NotFound => {
                "; /dev/net/tun is missing: load the tun module (modprobe tun)"
            }
            _ => "; choose another name with --tun (tun in cache.conf)",
        };
        anyhow::anyhow!("creating the TUN device {name:?} (--tun, tun in cache.conf): {e}{fix}")
    })?;
    sys::set_link_up(&actual).with_context(|| format!("bringing {actual} up"))?;
    for (iface, key) in [
        ("all", "rp_filter"),
        (actual.as_str(), "rp_filter"),
        (actual.as_str(), "accept_local"),
    ] {
        let value = if key == "accept_local" { "1" } else { "0" };
        let path = format!("/proc/sys/net/ipv4/conf/{iface}/{key}");
        if let Err(e) = std::fs::write(&path, value) {
            tracing::warn!(%path, error = %e, "could not set sysctl; inner packets may be dropped");
        }
    }
    tracing::info!(tun = %actual, "TUN device up");
    Ok((File::from(fd), actual))
}
