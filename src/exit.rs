//! Exit codes, documented in the README. One place, named.

/// Every threshold passed.
pub const PASS: i32 = 0;
/// At least one threshold failed (or a measurement a threshold needs was never observed).
pub const THRESHOLD_FAILED: i32 = 1;
/// A scenario, suite, topology or settings file is invalid; nothing was started.
pub const INVALID_INPUT: i32 = 2;
/// The environment cannot run the request (no root/netns rights, missing packages, stack not healthy).
pub const ENVIRONMENT: i32 = 3;
/// Interrupted by SIGINT/SIGTERM; applied faults were reverted; the report says "incomplete".
pub const INTERRUPTED: i32 = 4;
