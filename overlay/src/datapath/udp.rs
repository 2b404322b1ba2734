//! The underlay UDP socket: bound once, large buffers, batched receive (recvmmsg + GRO) and GSO
//! sends through quinn-udp, with a switch to turn the offloads off.
//!
//! Performs I/O.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};

/// Socket buffer size asked for, as wireguard-go does (7 MiB).
const SOCKET_BUFFER: usize = 7 << 20;

/// The WireGuard UDP socket.
pub struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
    offload: bool,
}

impl Udp {
    /// Binds `0.0.0.0:port`. With `offload` false, GSO and GRO stay off.
    pub fn bind(port: u16, offload: bool) -> io::Result<Self> {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))?;
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let udp = Self {
            socket,
            state,
            offload,
        };
        udp.set_buffers();
        if !offload {
            udp.disable_gro();
        }
        Ok(udp)
    }

    /// The bound port.
    pub fn local_port(&self) -> io::Result<u16> {
        Ok(self.socket.local_addr()?.port())
    }

    /// Datagrams per GSO send (1 when off or refused by the kernel).
    pub fn max_gso_segments(&self) -> usize {
        if self.offload {
            self.state.max_gso_segments()
        } else {
            1
        }
    }

    /// Datagrams the kernel may coalesce into one receive buffer (1 when off).
    pub fn gro_segments(&self) -> usize {
        if self.offload {
            self.state.gro_segments()
        } else {
            1
        }
    }

    /// Receives a batch without blocking (`WouldBlock` when none is ready).
    pub fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        self.state.recv(UdpSockRef::from(&self.socket), bufs, meta)
    }

    /// Sends `contents` to `dst` as datagrams of `segment` bytes (one GSO send when it holds more
    /// than one). Blocks while the socket buffer is full.
    pub fn send(&self, dst: SocketAddr, contents: &[u8], segment: usize) -> io::Result<()> {
        let transmit = Transmit {
            destination: dst,
            ecn: None,
            contents,
            segment_size: (contents.len() > segment).then_some(segment),
            src_ip: None,
        };
        loop {
            match self
                .state
                .try_send(UdpSockRef::from(&self.socket), &transmit)
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    crate::datapath::poll::wait(self.as_raw_fd(), libc::POLLOUT, None);
                }
                Err(e)
                    if transmit.segment_size.is_some()
                        && matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) =>
                {
                    // The kernel refused GSO (quinn-udp now reports 1 segment): send one by one.
                    for chunk in contents.chunks(segment) {
                        self.send(dst, chunk, segment)?;
                    }
                    return Ok(());
                }
                other => return other,
            }
        }
    }

    fn set_buffers(&self) {
        for (force, plain) in [
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        ] {
            if setsockopt_int(self.as_raw_fd(), libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
                if let Err(e) =
                    setsockopt_int(self.as_raw_fd(), libc::SOL_SOCKET, plain, SOCKET_BUFFER)
                {
                    tracing::debug!(error = %e, "could not enlarge the UDP socket buffer");
                }
            }
        }
    }

    fn disable_gro(&self) {
        if let Err(e) = setsockopt_int(self.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 0) {
            tracing::debug!(error = %e, "could not turn UDP GRO off");
        }
    }
}

impl AsRawFd for Udp {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: usize) -> io::Result<()> {
    let value = value as libc::c_int;
    // SAFETY: fd is a live socket owned by the caller; the option value is a c_int on the stack
    // whose size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
