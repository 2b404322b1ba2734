//! The forwarding sysctls the host needs to route between the bridge and the TUN device.

use std::path::Path;

use super::HostError;

/// Writes `1` to `/proc/sys/net/ipv4/ip_forward` and, when `v6`, to
/// `/proc/sys/net/ipv6/conf/all/forwarding`. These are per network namespace: this acts on the
/// calling thread's namespace.
pub fn enable_forwarding(v6: bool) -> Result<(), HostError> {
    write_sysctl(Path::new("/proc/sys/net/ipv4/ip_forward"))?;
    if v6 {
        write_sysctl(Path::new("/proc/sys/net/ipv6/conf/all/forwarding"))?;
    }
    Ok(())
}

fn write_sysctl(path: &Path) -> Result<(), HostError> {
    std::fs::write(path, b"1").map_err(|source| HostError::Sysctl {
        path: path.to_owned(),
        source,
    })
}
