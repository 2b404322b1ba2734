//! The agent's randomness: the operating system's random numbers, for the peer set's session
//! index seed and conntrack hash key, and the control link's backoff jitter.

/// A uniformly random `u32` from the operating system.
pub(super) fn random_u32() -> u32 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u32()
}

/// 128 random bits from the operating system.
pub(super) fn random_seed() -> [u64; 2] {
    use rand_core::RngCore;
    [rand_core::OsRng.next_u64(), rand_core::OsRng.next_u64()]
}
