mod model;
mod parse;

pub use model::*;
pub use parse::{load_scenario, load_suite, parse_scenario, parse_suite};
