//! The `rx` thread: UDP → [`Opened`] → TUN. It receives batches with recvmmsg (GRO trains
//! split by their stride), hands handshake messages to the handshake thread, writes what was
//! opened to TUN and sends the replies; the decisions are [`open`](super::open)'s.
//!
//! Handshake messages are judged here before they are queued, as kernel WireGuard does: a wrong
//! mac1 is dropped at once; while the handshake queue is short and the host's budget of
//! [`HANDSHAKES_PER_SECOND`] lasts (not under load) the rest is queued, charged to no source;
//! under load only a message with a valid cookie (mac2, which proves
//! its source address) is queued, charged to its source's share ([`SourceLimiter`]), and one
//! without gets a cookie reply ([`CookieChecker`]; within its source's share of cookies, or
//! from the host's pool of [`COOKIE_REPLIES_PER_SECOND`]). So a sender faking a real peer's address can neither spend that peer's share nor
//! keep its handshakes out. The checker and limiters are this thread's alone (no lock).

use std::hash::BuildHasher;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use crossbeam_channel::Sender;
use quinn_udp::RecvMeta;
use rand_core::RngCore;

use crate::peers::cookie::{self, CookieChecker, Macs};
use crate::peers::counters::HostDrop;
use crate::peers::limiter::{Bucket, Limit, SourceLimiter};
use crate::peers::noise::source_ip;
use crate::peers::peer::PeerRun;
use crate::peers::table::PeerTable;
use crate::peers::wire::{self, MessageKind, COOKIE_REPLY_LEN};

use super::batch::TxBatch;
use super::handshake::{HandshakeMessage, QUEUE};
use super::open::Opened;
use super::tun::{Tun, IDEAL_BATCH_SIZE};
use super::udp::Udp;
use super::{Shared, WAKE_INTERVAL};

/// recvmmsg batch (quinn-udp's own limit).
const RECV_BATCH: usize = 32;
/// One receive buffer holds a whole GRO train.
const RECV_BUF: usize = 65_536;
/// The handshake queue holding this many messages is "under load" (the kernel's threshold: an
/// eighth of its queue).
const UNDER_LOAD: usize = QUEUE / 8;
/// Handshake messages a second the host queues without a cookie; past that it is under load
/// (the kernel has only the queue's fill, with a handshake worker per CPU; this host has one
/// handshake thread, each initiation costs it two Diffie-Hellman operations, and a flood of
/// initiations it cannot identify must not take a core). Messages with a valid cookie are
/// queued beyond it, within their source's share.
pub(super) const HANDSHAKES_PER_SECOND: u64 = 100;
/// Cookie replies a second the host sends from its pool, beyond the sources' own shares, and
/// at once. Each is smaller than the message it answers and costs two BLAKE2s and one
/// XChaCha20-Poly1305: this bounds the receive thread's work for a flood, not the network's.
pub(super) const COOKIE_REPLIES_PER_SECOND: u64 = 2_000;
/// Cookie replies a second at most within the sources' own shares (each a
/// [`SourceLimiter`] share: 20 a second), beside the pool above.
const COOKIE_REPLY_CEILING: u64 = 20_000;
const COOKIE_REPLY_BURST: u64 = 200;

pub(super) fn run(
    shared: &Shared,
    tun: &Tun,
    udp: &Udp,
    tx_state: &parking_lot::Mutex<super::tx::TxState>,
    handshakes: Sender<HandshakeMessage>,
) {
    let mut recv = vec![0u8; RECV_BATCH * RECV_BUF];
    let mut meta = [RecvMeta::default(); RECV_BATCH];
    let mut out = Opened::new(IDEAL_BATCH_SIZE, RECV_BATCH, shared.audit.clone());
    let now = Instant::now();
    let public = *shared.table.load().identity().public_key().as_bytes();
    let mut handshakes = Handshakes::new(handshakes, &public, secret(), now);

    while !shared.stopping() {
        // Drain what is ready, then block (reading first saves a poll per busy batch).
        while let Some(n) = receive(udp, &mut recv, &mut meta) {
            open_batch(
                shared,
                tun,
                udp,
                &recv,
                &meta[..n],
                &mut out,
                &mut handshakes,
            );
            super::tx::flush(udp, &mut out.replies);
            if write_tun(tun, &mut out) {
                // Send what the kernel answered right away, unless `tx` is already at it.
                if let Some(mut st) = tx_state.try_lock() {
                    super::tx::pump(shared, tun, udp, &mut st);
                }
            }
        }
        super::poll::wait(udp.as_raw_fd(), libc::POLLIN, Some(WAKE_INTERVAL));
    }
}

/// The way to the handshake thread: its queue, behind this thread's cookie checker and limiters.
struct Handshakes {
    queue: Sender<HandshakeMessage>,
    limiter: SourceLimiter,
    cookies: CookieChecker,
    /// The checker of the key being retired, while a rotation's grace window lasts: an
    /// initiation for either key has a valid mac1.
    retiring: Option<CookieChecker>,
    /// The host's budget of messages handled without a cookie.
    budget: Bucket,
    /// Each source's share of cookie replies, and the ceiling on all of those.
    cookie_shares: SourceLimiter,
    reply_ceiling: Bucket,
    /// The host's pool of cookie replies beyond the sources' shares.
    replies: Bucket,
}

/// What becomes of one handshake message on receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Hand it to the handshake thread.
    Queue,
    /// Answer it with a cookie reply (from the retiring key's checker, when its mac1 was made
    /// for that key).
    Cookie {
        /// Whether it was addressed to the retiring key.
        retiring: bool,
    },
    /// Drop it, counting why.
    Drop(HostDrop),
}

impl Handshakes {
    fn new(
        queue: Sender<HandshakeMessage>,
        public: &[u8; 32],
        seed: [u8; 32],
        now: Instant,
    ) -> Self {
        Self {
            queue,
            limiter: SourceLimiter::new(random_seed(), now),
            cookies: CookieChecker::new(public, seed, now),
            retiring: None,
            budget: Bucket::new(HANDSHAKES_PER_SECOND, HANDSHAKES_PER_SECOND, now),
            cookie_shares: SourceLimiter::new(random_seed(), now),
            reply_ceiling: Bucket::new(COOKIE_REPLY_CEILING, COOKIE_REPLY_BURST, now),
            replies: Bucket::new(COOKIE_REPLIES_PER_SECOND, COOKIE_REPLY_BURST, now),
        }
    }

    /// Judges a handshake message of `kind` from `from` at `now`; `queue_long` is whether the
    /// handshake queue holds [`UNDER_LOAD`] messages. Under load means the queue is long or the
    /// host's budget of unproven messages ([`HANDSHAKES_PER_SECOND`]) is spent.
    fn judge(
        &mut self,
        table: &PeerTable,
        now: Instant,
        from: SocketAddr,
        kind: MessageKind,
        bytes: &[u8],
        queue_long: bool,
    ) -> Verdict {
        if kind == MessageKind::CookieReply {
            // Cheap to check, and only worth it for an index one of our peers has.
            let known = wire::peer_index(kind, bytes).and_then(|i| table.by_index(i));
            return match known {
                Some(_) => Verdict::Queue,
                None => Verdict::Drop(HostDrop::UnknownPeer),
            };
        }
        self.follow_keys(table, now);
        let under_load = queue_long || !self.budget.has_credit(now);
        if under_load && cookie::without_cookie(bytes) {
            // The common flood: no cookie, under load. Only a cookie reply could come of it, so
            // with none left to send it is dropped before any MAC is computed.
            if !self.cookie_credit(now, from) {
                return Verdict::Drop(HostDrop::HandshakeRateLimited);
            }
            return match self.check(now, from, bytes) {
                (Macs::BadMac1, _) => Verdict::Drop(HostDrop::HandshakeBadMac),
                (_, retiring) => Verdict::Cookie { retiring },
            };
        }
        let (macs, retiring) = self.check(now, from, bytes);
        if macs == Macs::BadMac1 {
            return Verdict::Drop(HostDrop::HandshakeBadMac);
        }
        // Not under load: queued, charged to no source (only to the host's budget).
        if !under_load && self.budget.allow(now) == Limit::Pass {
            return Verdict::Queue;
        }
        if macs == Macs::Mac2 {
            return match self.limiter.allow(now, source_ip(from)) {
                Limit::Pass => Verdict::Queue,
                Limit::Drop => Verdict::Drop(HostDrop::HandshakeRateLimited),
            };
        }
        if self.cookie_credit(now, from) {
            Verdict::Cookie { retiring }
        } else {
            Verdict::Drop(HostDrop::HandshakeRateLimited)
        }
    }

    /// Keeps a checker for each of the table's keys. A new key gets a new checker with a new
    /// seed (never a nonce again under a key); the one that was current stays while its key is
    /// the retiring one, so cookies it handed out keep working.
    fn follow_keys(&mut self, table: &PeerTable, now: Instant) {
        let keys = table.host_keys();
        let current = keys.current.public_key();
        if self.cookies.public() != current.as_bytes() {
            let fresh = match self.retiring.take() {
                Some(r) if r.public() == current.as_bytes() => r,
                _ => CookieChecker::new(current.as_bytes(), secret(), now),
            };
            self.retiring = Some(std::mem::replace(&mut self.cookies, fresh));
        }
        match &keys.retiring {
            None => self.retiring = None,
            Some(r) => {
                let public = r.public_key();
                if self
                    .retiring
                    .as_ref()
                    .is_none_or(|c| c.public() != public.as_bytes())
                {
                    self.retiring = Some(CookieChecker::new(public.as_bytes(), secret(), now));
                }
            }
        }
    }

    /// The message's MACs, checked for the current key, then for the retiring one: whether it
    /// was for the retiring key.
    fn check(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> (Macs, bool) {
        let macs = self.cookies.check(now, from, bytes);
        if macs != Macs::BadMac1 {
            return (macs, false);
        }
        match self.retiring.as_mut() {
            Some(r) => match r.check(now, from, bytes) {
                Macs::BadMac1 => (Macs::BadMac1, false),
                macs => (macs, true),
            },
            None => (macs, false),
        }
    }

    /// Takes one cookie reply's credit: from the source's own share of cookies (so a flood from
    /// other addresses does not keep a real peer from getting one), else from the host's pool
    /// (so a flood faked from a real peer's address does not either, while the pool lasts).
    fn cookie_credit(&mut self, now: Instant, from: SocketAddr) -> bool {
        let own = self.cookie_shares.allow(now, source_ip(from)) == Limit::Pass
            && self.reply_ceiling.allow(now) == Limit::Pass;
        own || self.replies.allow(now) == Limit::Pass
    }
}

/// 32 random bytes from the operating system, for the cookie checker's secrets and nonces.
fn secret() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut seed);
    seed
}

/// 128 random bits for the limiter's hash (std's randomly keyed hasher draws them from the
/// operating system).
fn random_seed() -> [u64; 2] {
    let state = std::collections::hash_map::RandomState::new();
    [state.hash_one(1u8), state.hash_one(2u8)]
}

/// One recvmmsg: the number of datagrams (or GRO trains) received, `None` when nothing is ready.
fn receive(udp: &Udp, recv: &mut [u8], meta: &mut [RecvMeta; RECV_BATCH]) -> Option<usize> {
    loop {
        let mut chunks = recv.chunks_mut(RECV_BUF);
        let mut iovs: [IoSliceMut<'_>; RECV_BATCH] = std::array::from_fn(|_| {
            IoSliceMut::new(chunks.next().expect("RECV_BATCH chunks of RECV_BUF"))
        });
        match udp.recv(&mut iovs, meta) {
            Ok(n) => return Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
                return None;
            }
        }
    }
}

/// Opens every datagram of one receive batch, writing to TUN whenever `out` fills up.
fn open_batch(
    shared: &Shared,
    tun: &Tun,
    udp: &Udp,
    recv: &[u8],
    meta: &[RecvMeta],
    out: &mut Opened,
    handshakes: &mut Handshakes,
) {
    let table = shared.table.load();
    let flows_now = shared.flows_now(&table);
    let mut run = PeerRun::new();
    // Read once per batch, and only when a handshake message is in it.
    let mut now = None;
    for (i, m) in meta.iter().enumerate() {
        let data = &recv[i * RECV_BUF..i * RECV_BUF + m.len];
        if m.len == 0 {
            // An empty datagram (anyone can send one) is no WireGuard message.
            shared.drops.bump(HostDrop::Malformed);
            continue;
        }
        let stride = if m.stride == 0 { m.len } else { m.stride };
        for datagram in data.chunks(stride) {
            if out.is_full() {
                run.release();
                write_tun(tun, out);
            }
            let opened = out.open(&table, &mut run, &shared.drops, flows_now, m.addr, datagram);
            if let Some(kind) = opened {
                run.release(); // handing over may wake the handshake thread: a syscall
                let now = *now.get_or_insert_with(Instant::now);
                let received = Incoming {
                    from: m.addr,
                    kind,
                    bytes: datagram,
                };
                let replies = &mut out.replies;
                if let Err(why) = on_handshake(handshakes, &table, udp, replies, now, received) {
                    shared.drops.bump(why);
                }
            }
        }
    }
}

/// One handshake message as received.
#[derive(Clone, Copy)]
struct Incoming<'a> {
    from: SocketAddr,
    kind: MessageKind,
    bytes: &'a [u8],
}

/// A handshake message judged, then queued, answered with a cookie reply (into `replies`,
/// flushed first when full) or dropped. Returns why it was not queued.
fn on_handshake(
    handshakes: &mut Handshakes,
    table: &PeerTable,
    udp: &Udp,
    replies: &mut TxBatch,
    now: Instant,
    m: Incoming<'_>,
) -> Result<(), HostDrop> {
    let queue_long = handshakes.queue.len() >= UNDER_LOAD;
    match handshakes.judge(table, now, m.from, m.kind, m.bytes, queue_long) {
        Verdict::Queue => hand_over(handshakes, m.from, m.kind, m.bytes),
        Verdict::Cookie { retiring } => {
            if !replies.has_room(COOKIE_REPLY_LEN) {
                super::tx::flush(udp, replies);
            }
            let checker = match handshakes.retiring.as_mut() {
                Some(r) if retiring => r,
                _ => &mut handshakes.cookies,
            };
            cookie_reply(checker, now, m.from, m.bytes, replies)
        }
        Verdict::Drop(why) => Err(why),
    }
}

/// Rare and expensive: a handshake message judged worth it goes to the handshake thread (copied
/// into a fixed-size message: no allocation). Returns why it was dropped.
fn hand_over(
    handshakes: &Handshakes,
    from: SocketAddr,
    kind: MessageKind,
    bytes: &[u8],
) -> Result<(), HostDrop> {
    let message = HandshakeMessage::new(from, kind, bytes).ok_or(HostDrop::Malformed)?;
    handshakes
        .queue
        .try_send(message)
        .map_err(|_| HostDrop::HandshakeQueueFull)
}

/// Writes the cookie reply to `message` into `replies`, to go out with this batch's replies.
/// Counted as [`HostDrop::HandshakeAnsweredWithCookie`]: the message itself is not handled.
fn cookie_reply(
    cookies: &mut CookieChecker,
    now: Instant,
    from: SocketAddr,
    message: &[u8],
    replies: &mut TxBatch,
) -> Result<(), HostDrop> {
    if let Some(len) = cookies.reply(now, from, message, replies.space()) {
        replies.commit(from, len);
    }
    Err(HostDrop::HandshakeAnsweredWithCookie)
}

/// Writes the opened packets to TUN; returns whether there were any.
fn write_tun(tun: &Tun, out: &mut Opened) -> bool {
    out.drain(tun.offload(), |packet| {
        if let Err(e) = tun.write(packet) {
            tracing::debug!(error = %e, "TUN write failed");
        }
    })
}

#[cfg(test)]
mod tests;
