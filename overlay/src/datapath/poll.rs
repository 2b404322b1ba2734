//! Waiting for a file descriptor to become ready, for the data-path threads that block on their
//! TUN queue or socket between batches.
//!
//! Performs I/O.

use std::os::fd::RawFd;
use std::time::Duration;

/// Waits until `fd` has one of `events` (`POLLIN`, `POLLOUT`) or `timeout` passes. Returns whether
/// it became ready.
pub(crate) fn wait(fd: RawFd, events: libc::c_short, timeout: Option<Duration>) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    // SAFETY: one valid pollfd on the stack, count 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    rc > 0 && pfd.revents != 0
}
