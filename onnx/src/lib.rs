//! ONNX for Strata: the protobuf layer ([`proto`]), the export of a compiled model's
//! `infer` entry ([`export`]), and the import of an ONNX model as a model file and its
//! weights ([`import`]).
//!
//! The export works on the graph IR after the compiler's passes (`Compiled::optimized`),
//! the level whose ops are few and map one-to-one, or nearly, to ONNX standard ops:
//! layers are already built from `matmul`, element-wise ops, reductions, `im2col` and
//! `scan`. Each Strata op becomes a short, fixed pattern of ONNX ops (the table is in
//! `docs/onnx.md`); the batch is the symbolic dimension `batch`; parameters (and the
//! features' normalization, which is part of `infer`) become initializers read from a
//! safetensors file of the model's weights.
//!
//! What cannot be exported is an [`ExportError`] naming the op and the model file's
//! line it came from. A built executable exports itself from an [`ExportTemplate`], the
//! export without its parameters' values.

pub mod export;
pub mod import;
pub mod proto;
pub mod template;

pub use export::{ExportError, ExportOptions, export_infer};
pub use import::{ImportError, ImportOptions, Imported, import_model};
pub use proto::{DecodeError, decode_model, encode_model};
pub use template::ExportTemplate;
