//! UDP datagram sweeps across the overlay: every payload size, in orders and bursts that make
//! the data path batch, coalesce and split packets, every datagram checked byte for byte where
//! it arrives. Also ICMP at chosen sizes, and the kernel's own error counters.
//!
//! A datagram is named by its length and a tag byte that is also its first byte, so even a
//! 1-byte datagram says which one it is. Its whole content is a function of (direction, tag,
//! length), so the receiver checks every byte of every datagram, including those too short to
//! carry the full header:
//!
//! ```text
//! byte 0   1     2..4             4..8              8..
//!      tag dir   length (BE u16)  sequence (BE u32) pseudo-random bytes seeded by (dir, tag, length)
//! ```
//!
//! truncated to the length (the one 0-byte datagram has tag 0). The sequence is the datagram's
//! position in the schedule.
//!
//! Pacing: the sender sends a burst (at most [`Schedule::window`] datagrams, back to back, so
//! the data path sees batches), then waits until the receiver — a thread of this same test
//! process — has read them all before the next burst. In flight there is never more than one
//! burst (under 100 KB), far below every queue on the path (socket buffers of 4 MiB and 7 MiB,
//! TUN and veth queues of hundreds of packets), so nothing is lost to congestion on veth: a
//! datagram that does not arrive was lost by the data path. Hence the bound is strict: every
//! datagram arrives, exactly once, intact.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::netns::Netns;
use super::traffic::spawn_in;

/// The overlay MTU the harness configures (the agent's default).
pub const TUNNEL_MTU: usize = 1420;
/// The largest UDP payload that crosses the tunnel unfragmented: MTU - 20 (IPv4) - 8 (UDP).
pub const MAX_UDP_PAYLOAD: usize = TUNNEL_MTU - 20 - 8;
/// The largest ICMP echo payload that does: MTU - 20 (IPv4) - 8 (ICMP).
pub const MAX_PING_PAYLOAD: usize = TUNNEL_MTU - 20 - 8;

/// How long the sender waits for a burst before counting it as (partly) lost.
const STALL: Duration = Duration::from_secs(5);
/// The same once something was lost: the data path is losing packets, so finish quickly and
/// report exactly which datagrams are missing.
const STALL_AFTER_LOSS: Duration = Duration::from_millis(100);
/// After this many stalls the sender gives up.
const MAX_STALLS: usize = 50;
/// Segment sizes of the `UDP_SEGMENT` sends.
const GSO_SEGMENTS: [usize; 13] = [1, 2, 3, 15, 16, 17, 64, 100, 576, 1000, 1279, 1391, 1392];
/// Same-size datagrams back to back in the "train" part (tags 3..3+TRAIN).
const TRAIN: u8 = 8;
/// First tag of the full segments of a `UDP_SEGMENT` send, and of its short tails.
const GSO_TAG: u8 = 3 + TRAIN;
const GSO_MAX_FULL: usize = 48;
const GSO_TAIL_TAG: u8 = GSO_TAG + GSO_MAX_FULL as u8 + 1;

/// One datagram of a schedule: its tag (first byte) and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    pub tag: u8,
    pub len: usize,
}

/// One send call.
#[derive(Clone, Debug)]
pub enum Send {
    /// A plain `sendto`.
    One(Id),
    /// One `sendto` with `UDP_SEGMENT` = `segment`: the kernel (or the TUN device, when it
    /// accepts USO super-packets) splits it into these datagrams, all `segment` bytes long
    /// except maybe the last.
    Gso { segment: usize, ids: Vec<Id> },
}

impl Send {
    fn count(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Gso { ids, .. } => ids.len(),
        }
    }
}

/// What a sender sends, in order.
pub struct Schedule {
    pub sends: Vec<Send>,
    /// Datagrams per burst (a `UDP_SEGMENT` send with more is a burst of its own).
    pub window: usize,
    seq: HashMap<Id, u32>,
}

impl Schedule {
    /// Every size from 0 (tag 0) or 1 to `max`:
    /// - tag 0 ascending, tag 1 descending (a datagram followed by a shorter one of the same
    ///   flow is exactly what UDP GRO merges, the shorter one ending the train), tag 2 in a
    ///   fixed pseudo-random order;
    /// - tags 3..=10: for each size, 8 datagrams of that size back to back (what batching,
    ///   UDP GSO/GRO on the underlay and GRO on the TUN coalesce);
    /// - with `gso`, `UDP_SEGMENT` sends: for each of [`GSO_SEGMENTS`], up to 48 full segments
    ///   plus a tail of half the size (TUN super-packets to split on read).
    pub fn new(max: usize, gso: bool) -> Self {
        assert!((1..=MAX_UDP_PAYLOAD).contains(&max), "max payload {max}");
        let mut s = Self {
            sends: Vec::new(),
            window: 32,
            seq: HashMap::new(),
        };
        for len in 0..=max {
            s.push(Send::One(Id { tag: 0, len }));
        }
        for len in (1..=max).rev() {
            s.push(Send::One(Id { tag: 1, len }));
        }
        let mut order: Vec<usize> = (1..=max).collect();
        let mut rng = SplitMix(0x05ee_d0f0_ff10_ad00);
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for len in order {
            s.push(Send::One(Id { tag: 2, len }));
        }
        for len in 1..=max {
            for tag in 3..3 + TRAIN {
                s.push(Send::One(Id { tag, len }));
            }
        }
        if gso {
            for (i, &segment) in GSO_SEGMENTS.iter().enumerate() {
                if segment > max {
                    continue;
                }
                let full = (60_000 / segment).min(GSO_MAX_FULL);
                let mut ids: Vec<Id> = (0..full)
                    .map(|k| Id {
                        tag: GSO_TAG + k as u8,
                        len: segment,
                    })
                    .collect();
                if segment >= 2 {
                    ids.push(Id {
                        tag: GSO_TAIL_TAG + i as u8,
                        len: segment / 2,
                    });
                }
                s.push(Send::Gso { segment, ids });
            }
        }
        s
    }

    fn push(&mut self, send: Send) {
        let ids = match &send {
            Send::One(id) => vec![*id],
            Send::Gso { segment, ids } => {
                assert!(ids.len() >= 2, "a UDP_SEGMENT send of one datagram");
                let (last, full) = ids.split_last().unwrap();
                assert!(full.iter().all(|i| i.len == *segment) && last.len <= *segment);
                ids.clone()
            }
        };
        for id in ids {
            assert!(id.len > 0 || id.tag == 0, "only tag 0 may be empty");
            let seq = self.seq.len() as u32;
            assert!(
                self.seq.insert(id, seq).is_none(),
                "{id:?} twice in a schedule"
            );
        }
        self.sends.push(send);
    }

    /// Datagrams in the schedule.
    pub fn datagrams(&self) -> usize {
        self.seq.len()
    }

    /// The content of datagram `id` sent in direction `dir`, if it is in the schedule.
    pub fn content(&self, dir: u8, id: Id) -> Option<Vec<u8>> {
        let seq = *self.seq.get(&id)?;
        Some(content(dir, id, seq))
    }

    /// Consecutive sends of at most `window` datagrams together (a bigger send alone).
    fn bursts(&self) -> Vec<&[Send]> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut n = 0;
        for (i, s) in self.sends.iter().enumerate() {
            if n > 0 && n + s.count() > self.window {
                out.push(&self.sends[start..i]);
                start = i;
                n = 0;
            }
            n += s.count();
        }
        if start < self.sends.len() {
            out.push(&self.sends[start..]);
        }
        out
    }
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn content(dir: u8, id: Id, seq: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(id.len.max(8) + 8);
    v.push(id.tag);
    v.push(dir);
    v.extend_from_slice(&(id.len as u16).to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    let mut rng = SplitMix((u64::from(dir) << 40) ^ (u64::from(id.tag) << 24) ^ id.len as u64);
    while v.len() < id.len {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(id.len);
    v
}

/// Datagrams read so far, and a way to wait for a count.
struct Progress {
    count: Mutex<usize>,
    cv: Condvar,
}

impl Progress {
    fn bump(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_all();
    }

    /// Waits until at least `target` datagrams were read; returns the count.
    fn wait_for(&self, target: usize, timeout: Duration) -> usize {
        let g = self.count.lock().unwrap();
        let (g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |c| *c < target)
            .unwrap();
        *g
    }
}

/// The outcome of one direction of a sweep.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub what: String,
    /// Datagrams in the schedule.
    pub scheduled: usize,
    /// Datagrams the kernel accepted from the sender.
    pub sent: usize,
    /// Scheduled datagrams not sent (a send failed, or the sender gave up).
    pub unsent: Vec<Id>,
    pub send_errors: Vec<String>,
    /// Bursts the receiver did not fully get within the stall timeout.
    pub stalls: usize,
    /// Whether the sender gave up after too many stalls.
    pub aborted: bool,
    /// Datagrams read (whatever they were).
    pub received: usize,
    /// Datagrams sent but never read intact.
    pub missing: Vec<Id>,
    /// Datagrams read more than once (intact copies).
    pub duplicates: Vec<Id>,
    /// Datagrams whose length and first byte name a scheduled one but whose bytes differ.
    pub corrupt: Vec<String>,
    /// Datagrams that name no scheduled one (a merge or a truncation, for instance).
    pub unexpected: Vec<String>,
    /// Datagrams from another source address than the sender's.
    pub wrong_source: Vec<String>,
    pub receive_errors: Vec<String>,
    /// Datagrams read after one with a higher sequence number (not an error for UDP).
    pub reordered: usize,
    pub elapsed: Duration,
}

impl SweepReport {
    /// Panics unless every scheduled datagram was sent and arrived exactly once, intact.
    #[track_caller]
    pub fn assert_all_intact(&self) {
        assert!(self.is_clean(), "{}", self.describe());
        eprintln!(
            "{}: all {} datagrams intact in {:?} ({} out of order)",
            self.what, self.scheduled, self.elapsed, self.reordered
        );
    }

    /// Every scheduled datagram sent and read exactly once, intact, from the right source.
    /// (Stalls alone are not failures: a burst slower than [`STALL`] that still arrives is
    /// slow, not broken.)
    pub fn is_clean(&self) -> bool {
        self.sent == self.scheduled
            && !self.aborted
            && self.send_errors.is_empty()
            && self.missing.is_empty()
            && self.duplicates.is_empty()
            && self.corrupt.is_empty()
            && self.unexpected.is_empty()
            && self.wrong_source.is_empty()
            && self.receive_errors.is_empty()
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "UDP sweep {}: {} scheduled, {} sent, {} read, {} sent but missing, {} duplicated, {} corrupt, \
             {} unexpected, {} from a wrong source, {} stalls{}, {} reordered, in {:?}\n",
            self.what,
            self.scheduled,
            self.sent,
            self.received,
            self.missing.len(),
            self.duplicates.len(),
            self.corrupt.len(),
            self.unexpected.len(),
            self.wrong_source.len(),
            self.stalls,
            if self.aborted {
                " (sender gave up)"
            } else {
                ""
            },
            self.reordered,
            self.elapsed
        );
        let list = |s: &mut String, name: &str, v: &[String]| {
            if !v.is_empty() {
                let _ = writeln!(s, "  {name} (first {} of {}):", v.len().min(20), v.len());
                for e in v.iter().take(20) {
                    let _ = writeln!(s, "    {e}");
                }
            }
        };
        list(&mut s, "send errors", &self.send_errors);
        list(&mut s, "receive errors", &self.receive_errors);
        list(&mut s, "corrupt", &self.corrupt);
        list(&mut s, "unexpected", &self.unexpected);
        list(&mut s, "wrong source", &self.wrong_source);
        if !self.unsent.is_empty() {
            let _ = writeln!(s, "  not sent (tag: lengths): {}", ranges(&self.unsent));
        }
        if !self.missing.is_empty() {
            let _ = writeln!(s, "  missing (tag: lengths): {}", ranges(&self.missing));
        }
        if !self.duplicates.is_empty() {
            let _ = writeln!(
                s,
                "  duplicated (tag: lengths): {}",
                ranges(&self.duplicates)
            );
        }
        s
    }
}

/// "tag 0: 1-5, 9; tag 3: 100" from a list of ids.
fn ranges(ids: &[Id]) -> String {
    let mut by_tag: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
    for id in ids {
        by_tag.entry(id.tag).or_default().push(id.len);
    }
    let mut parts = Vec::new();
    for (tag, mut lens) in by_tag {
        lens.sort_unstable();
        lens.dedup();
        let mut rs: Vec<String> = Vec::new();
        let mut i = 0;
        while i < lens.len() {
            let mut j = i;
            while j + 1 < lens.len() && lens[j + 1] == lens[j] + 1 {
                j += 1;
            }
            rs.push(if i == j {
                lens[i].to_string()
            } else {
                format!("{}-{}", lens[i], lens[j])
            });
            i = j + 1;
        }
        parts.push(format!("tag {tag}: {}", rs.join(", ")));
    }
    let mut s = parts.join("; ");
    if s.len() > 3000 {
        s.truncate(3000); // ASCII only
        s += " ...";
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What the receiver saw.
#[derive(Default)]
struct Received {
    count: usize,
    got: HashMap<Id, usize>,
    corrupt: Vec<String>,
    unexpected: Vec<String>,
    wrong_source: Vec<String>,
    errors: Vec<String>,
    max_seq: Option<u32>,
    reordered: usize,
}

impl Received {
    fn check(&mut self, schedule: &Schedule, dir: u8, source: IpAddr, from: SocketAddr, d: &[u8]) {
        self.count += 1;
        if from.ip() != source {
            self.wrong_source
                .push(format!("{} bytes from {from}, expected {source}", d.len()));
        }
        let id = Id {
            tag: d.first().copied().unwrap_or(0),
            len: d.len(),
        };
        let Some(&seq) = schedule.seq.get(&id) else {
            self.unexpected.push(format!(
                "{} bytes starting {}: no datagram of this length has tag {}",
                d.len(),
                hex(&d[..d.len().min(16)]),
                id.tag
            ));
            return;
        };
        let want = content(dir, id, seq);
        if let Some(at) = want.iter().zip(d).position(|(a, b)| a != b) {
            let end = (at + 8).min(d.len());
            self.corrupt.push(format!(
                "tag {} length {} (seq {seq}): first difference at byte {at}: got {} expected {} \
                 (header got {} expected {})",
                id.tag,
                id.len,
                hex(&d[at..end]),
                hex(&want[at..end]),
                hex(&d[..d.len().min(8)]),
                hex(&want[..want.len().min(8)])
            ));
            return;
        }
        *self.got.entry(id).or_default() += 1;
        if self.max_seq.is_some_and(|m| seq < m) {
            self.reordered += 1;
        }
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
    }
}

fn setsockopt_int(sock: &UdpSocket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: a valid socket fd and a pointer to an int of the given size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What the sender did.
#[derive(Default)]
struct Sent {
    /// Datagrams the kernel accepted, in order.
    ids: Vec<Id>,
    errors: Vec<String>,
    stalls: usize,
    aborted: bool,
}

/// One side of a sweep: a namespace and the address its socket binds.
#[derive(Clone)]
pub struct End {
    pub ns: Netns,
    pub ip: IpAddr,
}

impl End {
    pub fn new(ns: &Netns, ip: &str) -> Self {
        Self {
            ns: ns.clone(),
            ip: ip.parse().expect("sweep address"),
        }
    }
}

/// Sends `schedule` from `from` to `to`:`port` (datagrams marked with `dir`), paced by bursts,
/// and returns what the receiver saw. Blocks until done.
pub fn sweep(
    what: &str,
    from: &End,
    to: &End,
    port: u16,
    dir: u8,
    schedule: &Arc<Schedule>,
) -> SweepReport {
    let progress = Arc::new(Progress {
        count: Mutex::new(0),
        cv: Condvar::new(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let bind = SocketAddr::new(to.ip, port);
    let source = from.ip;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let receiver = {
        let (progress, stop, schedule) = (progress.clone(), stop.clone(), schedule.clone());
        spawn_in(&to.ns, move || -> Received {
            let mut rec = Received::default();
            let sock = match UdpSocket::bind(bind) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("bind {bind}: {e}")));
                    return rec;
                }
            };
            // Room for far more than one burst (we are root: the FORCE variant ignores rmem_max).
            let _ = setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20);
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("read timeout");
            let _ = ready_tx.send(Ok(()));
            let mut buf = vec![0u8; 65_536];
            let mut draining = false;
            loop {
                if !draining && stop.load(Ordering::SeqCst) {
                    // Read what is already queued, then stop.
                    draining = true;
                    sock.set_nonblocking(true).expect("nonblocking");
                }
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        rec.check(&schedule, dir, source, from, &buf[..n]);
                        progress.bump();
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if draining {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        rec.errors.push(format!("recv on {bind}: {e}"));
                        if draining || rec.errors.len() > 20 {
                            break;
                        }
                    }
                }
            }
            rec
        })
    };
    let mut report = SweepReport {
        what: what.to_string(),
        scheduled: schedule.datagrams(),
        ..SweepReport::default()
    };
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = receiver.join();
            report.receive_errors.push(e);
            return report;
        }
        Err(_) => {
            let _ = receiver.join();
            report.receive_errors.push("receiver died".into());
            return report;
        }
    }

    let t0 = Instant::now();
    let sender = {
        let (progress, schedule) = (progress.clone(), schedule.clone());
        let dst = bind;
        spawn_in(&from.ns, move || -> Sent {
            let mut out = Sent::default();
            let sock = match UdpSocket::bind(SocketAddr::new(source, 0)) {
                Ok(s) => s,
                Err(e) => {
                    out.errors.push(format!("bind {source}: {e}"));
                    return out;
                }
            };
            let errors = &mut out.errors;
            // DF on every datagram: one that does not fit fails to send instead of fragmenting.
            if let Err(e) = setsockopt_int(
                &sock,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_DO,
            ) {
                errors.push(format!("IP_MTU_DISCOVER: {e}"));
            }
            let (mut sent, mut lost) = (0usize, 0usize);
            for burst in schedule.bursts() {
                for send in burst {
                    let (buf, segment) = match send {
                        Send::One(id) => (content(dir, *id, schedule.seq[id]), None),
                        Send::Gso { segment, ids } => {
                            let mut b = Vec::new();
                            for id in ids {
                                b.extend_from_slice(&content(dir, *id, schedule.seq[id]));
                            }
                            (b, Some(*segment))
                        }
                    };
                    if let Some(seg) = segment {
                        if let Err(e) =
                            setsockopt_int(&sock, libc::SOL_UDP, libc::UDP_SEGMENT, seg as i32)
                        {
                            errors.push(format!("UDP_SEGMENT {seg}: {e}"));
                            continue;
                        }
                    }
                    match sock.send_to(&buf, dst) {
                        Ok(n) if n == buf.len() => {
                            sent += send.count();
                            match send {
                                Send::One(id) => out.ids.push(*id),
                                Send::Gso { ids, .. } => out.ids.extend_from_slice(ids),
                            }
                        }
                        Ok(n) => errors.push(format!("{send:?}: sent {n} of {} bytes", buf.len())),
                        Err(e) => errors.push(format!("{send:?} ({} bytes): {e}", buf.len())),
                    }
                    if segment.is_some() {
                        setsockopt_int(&sock, libc::SOL_UDP, libc::UDP_SEGMENT, 0)
                            .expect("reset UDP_SEGMENT");
                    }
                }
                let target = sent - lost;
                let stall = if out.stalls == 0 {
                    STALL
                } else {
                    STALL_AFTER_LOSS
                };
                let got = progress.wait_for(target, stall);
                if got < target {
                    out.stalls += 1;
                    lost += target - got;
                    if out.stalls >= MAX_STALLS {
                        out.aborted = true;
                        break;
                    }
                }
            }
            out
        })
    };
    let sent = sender.join().unwrap_or_else(|_| Sent {
        errors: vec!["sender thread panicked".to_string()],
        aborted: true,
        ..Sent::default()
    });
    report.elapsed = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    let rec = receiver.join().unwrap_or_else(|_| Received {
        errors: vec!["receiver thread panicked".into()],
        ..Received::default()
    });
    report.sent = sent.ids.len();
    report.send_errors = sent.errors;
    report.stalls = sent.stalls;
    report.aborted = sent.aborted;
    report.received = rec.count;
    let was_sent: std::collections::HashSet<Id> = sent.ids.iter().copied().collect();
    let mut unsent: Vec<Id> = schedule
        .seq
        .keys()
        .filter(|id| !was_sent.contains(id))
        .copied()
        .collect();
    unsent.sort_unstable();
    report.unsent = unsent;
    let mut missing: Vec<Id> = sent
        .ids
        .iter()
        .filter(|id| !rec.got.contains_key(id))
        .copied()
        .collect();
    missing.sort_unstable();
    report.missing = missing;
    let mut dups: Vec<Id> = rec
        .got
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(id, _)| *id)
        .collect();
    dups.sort_unstable();
    report.duplicates = dups;
    report.corrupt = rec.corrupt;
    report.unexpected = rec.unexpected;
    report.wrong_source = rec.wrong_source;
    report.receive_errors = rec.errors;
    report.reordered = rec.reordered;
    report
}

/// Sweeps `a` → `b` (to `port`) and `b` → `a` (to `port + 1`) at the same time, and asserts
/// both arrive complete and intact (with both reports in the message when either does not).
#[track_caller]
pub fn assert_sweep_both_ways(a: &End, b: &End, port: u16, schedule: &Arc<Schedule>) {
    let ab_what = format!("{} -> {}", a.ip, b.ip);
    let ba_what = format!("{} -> {}", b.ip, a.ip);
    let (ab, ba) = std::thread::scope(|s| {
        let ab = s.spawn(|| sweep(&ab_what, a, b, port, 0xab, schedule));
        let ba = s.spawn(|| sweep(&ba_what, b, a, port + 1, 0xba, schedule));
        (
            ab.join().expect("sweep a->b"),
            ba.join().expect("sweep b->a"),
        )
    });
    assert!(
        ab.is_clean() && ba.is_clean(),
        "datagrams lost or damaged:\n{}{}",
        ab.describe(),
        ba.describe()
    );
    ab.assert_all_intact();
    ba.assert_all_intact();
}

/// `ping -M do -s SIZE -c COUNT` from `ns` to `dst`: the raw output, and whether every echo
/// came back once, with the data it carried (iputils reports damaged data as "wrong data
/// byte" and extra replies as "DUP!", without failing).
pub fn ping_df(ns: &Netns, dst: &str, size: usize, count: u32) -> (bool, String) {
    let (s, c) = (size.to_string(), count.to_string());
    let out = ns.exec(&[
        "ping", "-n", "-M", "do", "-s", &s, "-c", &c, "-i", "0.2", "-W", "2", dst,
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = super::traffic::parse_ping_summary(&text);
    let ok = out.status.success()
        && summary == Some((count, count))
        && !text.contains("wrong data byte")
        && !text.contains("DUP!");
    (ok, text)
}

/// Asserts pings of each size (with DF) from `ns` to `dst` all come back intact, and that one
/// byte more than [`MAX_PING_PAYLOAD`] does not get through unfragmented.
#[track_caller]
pub fn assert_ping_sizes(ns: &Netns, dst: &str, sizes: &[usize]) {
    for &size in sizes {
        let (ok, text) = ping_df(ns, dst, size, 3);
        assert!(
            ok,
            "ping -M do -s {size} from {} to {dst} did not get 3 intact replies:\n{text}",
            ns.name()
        );
    }
    let (ok, text) = ping_df(ns, dst, MAX_PING_PAYLOAD + 1, 1);
    assert!(
        !ok,
        "ping -M do -s {} from {} to {dst} crossed a {TUNNEL_MTU}-byte tunnel unfragmented:\n{text}",
        MAX_PING_PAYLOAD + 1,
        ns.name()
    );
}

/// The kernel's SNMP counters of `ns` (`/proc/net/snmp`), as "Udp.InErrors" -> value.
pub fn snmp(ns: &Netns) -> BTreeMap<String, i64> {
    let text = ns.run(&["cat", "/proc/net/snmp"]);
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((proto, names)), Some((_, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse() {
                out.insert(format!("{proto}.{n}"), v);
            }
        }
    }
    out
}

/// Asserts the named counters of `ns` are zero (listing all counters otherwise).
#[track_caller]
pub fn assert_snmp_zero(ns: &Netns, names: &[&str]) {
    let c = snmp(ns);
    let bad: Vec<String> = names
        .iter()
        .filter(|n| c.get(**n).copied().unwrap_or(0) != 0)
        .map(|n| format!("{n} = {}", c[*n]))
        .collect();
    assert!(
        bad.is_empty(),
        "kernel counters in {} that must be zero are not: {}\nall counters: {c:?}",
        ns.name(),
        bad.join(", ")
    );
}

/// Counters that stay zero in a namespace whose traffic crossed the tunnel intact and
/// unfragmented: no IP fragments made or reassembled, no bad IP headers, no bad UDP or TCP
/// checksums.
pub const CLEAN_RECEIVE: [&str; 5] = [
    "Ip.FragCreates",
    "Ip.ReasmReqds",
    "Ip.InHdrErrors",
    "Udp.InCsumErrors",
    "Tcp.InCsumErrors",
];
