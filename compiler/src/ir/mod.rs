//! The graph IR: a petgraph graph of ops with tensor types and source spans.
//!
//! - [`types`]: element types, dimensions (with the symbolic batch), shapes.
//! - [`op`]: the op set and each op's typing rule.
//! - [`graph`]: the graph, its invariants and [`Graph::verify`].
//! - [`print`] / [`dot`]: the text form and Graphviz output; [`parse`] reads the text form back.
//! - [`init`]: parameter initial values (seeded).
//! - [`interpret`]: the reference interpreter (f64), the oracle for every pass and backend.

pub mod dot;
pub mod graph;
pub mod init;
pub mod interpret;
pub mod json;
pub mod op;
pub mod parse;
pub mod print;
pub mod scan;
pub mod types;

pub use graph::{Graph, Node, ValueId};
pub use op::{BinaryOp, ConvWindow, Init, Op, ReduceOp, UnaryOp};
pub use scan::Scan;
pub use types::{DType, Dim, Shape, TensorType};
