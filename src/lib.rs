//! faultline: provisions an HA data stack, drives load, injects faults and measures failover on one clock.

pub mod analysis;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod component;
pub mod drill;
pub mod engine;
pub mod events;
pub mod exit;
pub mod fault;
pub mod history;
pub mod input_error;
pub mod ledger;
pub mod load;
pub mod log_agreement;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod secret;
pub mod settings;
pub mod targets;
pub mod topology;
pub mod verdict;
