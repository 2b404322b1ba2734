//! An outgoing batch of datagrams, packed back to back in one buffer, and the grouping of that
//! batch into UDP GSO sends: a run of datagrams to the same destination, all of one size except a
//! shorter last one, goes to the kernel as one `sendmsg` with `UDP_SEGMENT`.
//!
//! No I/O.

use std::net::SocketAddr;

/// The kernel's limit on segments in one UDP GSO send.
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Largest payload of one UDP send (IPv4: 65535 - 20 - 8).
pub const MAX_GSO_BYTES: usize = 65_507;

#[derive(Debug, Clone, Copy)]
struct Item {
    dst: SocketAddr,
    start: usize,
    len: usize,
}

/// Datagrams packed back to back, with their destinations.
pub struct TxBatch {
    buf: Vec<u8>,
    used: usize,
    items: Vec<Item>,
}

/// One send: `contents` are `count` datagrams of `segment` bytes each (the last may be shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Destination of every datagram in the run.
    pub dst: SocketAddr,
    /// Byte range in the batch buffer.
    pub start: usize,
    /// Total bytes.
    pub len: usize,
    /// Size of each datagram but the last.
    pub segment: usize,
    /// Number of datagrams.
    pub count: usize,
}

impl TxBatch {
    /// A batch of `bytes` capacity holding up to `items` datagrams; allocated once.
    pub fn new(bytes: usize, items: usize) -> Self {
        Self {
            buf: vec![0; bytes],
            used: 0,
            items: Vec::with_capacity(items),
        }
    }

    /// The free space after the last datagram, to seal the next one into.
    #[inline]
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.buf[self.used..]
    }

    /// Whether one more datagram of `len` bytes fits (bytes and items both).
    pub fn has_room(&self, len: usize) -> bool {
        self.free() >= len && self.items.len() < self.items.capacity()
    }

    /// Free bytes left.
    pub fn free(&self) -> usize {
        self.buf.len() - self.used
    }

    /// Records that `len` bytes were written at the start of [`Self::space`], for `dst`.
    #[inline]
    pub fn commit(&mut self, dst: SocketAddr, len: usize) {
        debug_assert!(len <= self.free());
        self.items.push(Item {
            dst,
            start: self.used,
            len,
        });
        self.used += len;
    }

    /// Whether the batch holds no datagram.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of datagrams in the batch.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The bytes of a run or datagram.
    pub fn bytes(&self, start: usize, len: usize) -> &[u8] {
        &self.buf[start..start + len]
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.items.clear();
        self.used = 0;
    }

    /// Calls `send` for each GSO run, in order, with at most `max_segments` datagrams per run.
    pub fn for_each_run(&self, max_segments: usize, mut send: impl FnMut(Run)) {
        let max_segments = max_segments.clamp(1, MAX_GSO_SEGMENTS);
        let mut i = 0;
        while i < self.items.len() {
            let first = self.items[i];
            let mut run = Run {
                dst: first.dst,
                start: first.start,
                len: first.len,
                segment: first.len,
                count: 1,
            };
            i += 1;
            while i < self.items.len() && run.count < max_segments {
                let next = self.items[i];
                if next.dst != run.dst
                    || next.len > run.segment
                    || run.len + next.len > MAX_GSO_BYTES
                {
                    break;
                }
                run.len += next.len;
                run.count += 1;
                i += 1;
                if next.len < run.segment {
                    break; // a shorter datagram ends the run
                }
            }
            send(run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn runs(batch: &TxBatch, max: usize) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        batch.for_each_run(max, |r| out.push((r.count, r.segment, r.len)));
        out
    }

    fn fill(batch: &mut TxBatch, items: &[(&str, usize)]) {
        for (dst, len) in items {
            batch.space()[..*len].fill(*len as u8);
            batch.commit(addr(dst), *len);
        }
    }

    #[test]
    fn equal_sizes_to_one_destination_make_one_run_ending_with_a_short_one() {
        let mut b = TxBatch::new(1 << 16, 64);
        let a = "198.18.0.2:51820";
        fill(
            &mut b,
            &[(a, 1452), (a, 1452), (a, 1452), (a, 100), (a, 1452)],
        );
        assert_eq!(
            runs(&b, 64),
            vec![(4, 1452, 1452 * 3 + 100), (1, 1452, 1452)]
        );
    }

    #[test]
    fn destination_change_and_larger_datagram_split_runs() {
        let mut b = TxBatch::new(1 << 16, 64);
        let a = "198.18.0.2:51820";
        let c = "198.18.0.3:51820";
        fill(&mut b, &[(a, 500), (c, 500), (c, 600), (c, 600)]);
        assert_eq!(
            runs(&b, 64),
            vec![(1, 500, 500), (1, 500, 500), (2, 600, 1200)]
        );
    }

    #[test]
    fn runs_respect_segment_and_byte_limits() {
        let mut b = TxBatch::new(1 << 20, 256);
        let a = "198.18.0.2:51820";
        for _ in 0..100 {
            fill(&mut b, &[(a, 1452)]);
        }
        let r = runs(&b, 64);
        assert!(r
            .iter()
            .all(|(n, _, len)| *n <= 64 && *len <= MAX_GSO_BYTES));
        assert_eq!(r.iter().map(|(n, _, _)| n).sum::<usize>(), 100);
        assert_eq!(r[0].0, MAX_GSO_BYTES / 1452);
        // GSO off: one datagram per send.
        assert_eq!(runs(&b, 1).len(), 100);
    }

    #[test]
    fn runs_cover_the_bytes_in_order() {
        let mut b = TxBatch::new(1 << 16, 64);
        let a = "198.18.0.2:51820";
        fill(&mut b, &[(a, 3), (a, 3), (a, 2)]);
        let mut seen = Vec::new();
        b.for_each_run(64, |r| seen.extend_from_slice(b.bytes(r.start, r.len)));
        assert_eq!(seen, vec![3, 3, 3, 3, 3, 3, 2, 2]);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.free(), 1 << 16);
    }
}
