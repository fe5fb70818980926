//! faultline: provisions an HA data stack, drives load, injects faults and measures failover on one clock.

pub mod clock;
pub mod events;
pub mod exit;
pub mod input_error;
pub mod ledger;
pub mod scenario;
pub mod topology;
