//! Join tokens: `WGM1-<CA digest>-<secret>` (being written).
