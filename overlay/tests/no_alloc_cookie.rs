//! What the receive thread does for each handshake message under a flood allocates nothing:
//! checking mac1 and mac2 ([`CookieChecker::check`]), writing cookie replies
//! ([`CookieChecker::reply`]) and the host's buckets ([`Bucket`]), run here with a counting
//! allocator once their state is set up. (A separate test binary: the counter is process-wide.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wgmesh_config::PrivateKey;
use wgmesh_overlay::peers::cookie::{without_cookie, CookieChecker, Macs};
use wgmesh_overlay::peers::limiter::{Bucket, Limit};
use wgmesh_overlay::peers::noise::{LocalIdentity, Tunnel};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn checking_macs_and_writing_cookie_replies_allocate_nothing() {
    let responder = LocalIdentity::new(&PrivateKey::generate());
    let initiator = LocalIdentity::new(&PrivateKey::generate());
    let mut tunnel = Tunnel::new(&initiator, &responder.public_key(), None, None, 1);
    let mut init = [0u8; 256];
    let n = tunnel.initiate(&mut init).expect("an initiation");
    let init = &init[..n];
    let t0 = Instant::now();
    let mut checker = CookieChecker::new(responder.public_key().as_bytes(), [3; 32], t0);
    let mut pool = Bucket::new(4_000, 400, t0);
    let mut bad = [0u8; 148];
    bad.copy_from_slice(init);
    bad[10] ^= 1;
    // A mac2 that is not zeros: the cookie is computed to refuse it.
    let mut forged = [0u8; 148];
    forged.copy_from_slice(init);
    forged[140] ^= 1;
    let mut out = [0u8; 64];
    let (mut replies, mut refused) = (0usize, 0usize);

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..2_000u32 {
        // Past a secret's two minutes too, for a new secret on the way.
        let now = t0 + Duration::from_millis(u64::from(i) * 100);
        let from = SocketAddr::from((Ipv4Addr::from(0xc612_0000 + i % 500), 51820));
        assert!(without_cookie(init));
        assert_eq!(checker.check(now, from, init), Macs::Mac1);
        refused += usize::from(checker.check(now, from, &bad) == Macs::BadMac1);
        assert_eq!(checker.check(now, from, &forged), Macs::Mac1);
        if pool.allow(now) == Limit::Pass {
            replies += usize::from(checker.reply(now, from, init, &mut out) == Some(64));
        }
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!((replies, refused), (2_000, 2_000));
    assert_eq!(allocations, 0, "the cookie checker allocated");
}
