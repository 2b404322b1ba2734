//! The TUN device: created with virtio-net offloads (TSO super-packets in, GRO-coalesced writes
//! out) when asked and the kernel allows, plain packets otherwise.
//!
//! Performs I/O.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tun_rs::{DeviceBuilder, SyncDevice};
pub use tun_rs::{IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// The overlay's TUN device.
pub struct Tun {
    dev: SyncDevice,
    offload: bool,
}

impl Tun {
    /// Creates and brings up the device `name` with `mtu`. With `offload`, tries virtio-net
    /// offloads and falls back to plain packets when the kernel refuses them.
    pub fn create(name: &str, mtu: u16, offload: bool) -> io::Result<Self> {
        if offload {
            match Self::build(name, mtu, true) {
                Ok(dev) => {
                    let offload = dev.tcp_gso();
                    return Ok(Self { dev, offload });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TUN offloads refused; using plain packets");
                }
            }
        }
        let dev = Self::build(name, mtu, false)?;
        Ok(Self {
            dev,
            offload: false,
        })
    }

    fn build(name: &str, mtu: u16, offload: bool) -> io::Result<SyncDevice> {
        let dev = DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .offload(offload)
            .enable(true)
            .build_sync()?;
        dev.set_nonblocking(true)?;
        Ok(dev)
    }

    /// Whether TSO/GRO offloads are on.
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Whether UDP segmentation offload (USO) is on too.
    pub fn udp_offload(&self) -> bool {
        self.dev.udp_gso()
    }

    /// Reads one packet or super-packet without blocking, as the device gives it (behind its
    /// virtio-net header when offloads are on; [`super::tso::Split`] cuts it up).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.dev.recv(buf)
    }

    /// Writes one packet (with its virtio-net header first when offloads are on).
    #[inline]
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        self.dev.send(packet)
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }
}
