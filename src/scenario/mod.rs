pub(crate) mod document;
mod duration;
mod http_probe;
mod model;
mod parse;
mod parse_fault;
mod parse_http_probe;
mod parse_step;
pub mod source_map;
mod threshold;

pub use duration::{format_duration, parse_duration};
pub use http_probe::{ExpectStatus, HttpMethod, HttpProbe, ProbeHeaderValue, StatusMatch};
pub use model::*;
pub use parse::{
    load_scenario, load_suite, parse_scenario, parse_suite, scenario_schema, suite_schema,
};
pub use threshold::parse_threshold;
