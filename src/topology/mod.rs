mod model;
mod parse;

pub use model::{Network, Node, Placement, Topology};
pub use parse::{load_topology, parse_topology, topology_schema};
