//! Machine code compiled ahead of time: the artifact's optional fifth section.
//!
//! A built executable carries its kernels compiled for the machine it was built on, so
//! that a start maps code instead of generating and compiling it (milliseconds for a
//! small model, a tenth of a second for a large one). The section is produced and used
//! by the runtime's CPU backend; this module owns its layout and the checks that make
//! it safe to index:
//!
//! ```text
//! offset  size  field
//! 0       8     header length H, u64 LE
//! 8       H     header, JSON: target, features, generator, functions
//! 8+H     rest  code: every function's bytes at its offset
//! ```
//!
//! An empty section means the artifact carries no machine code (the runtime compiles
//! the kernel IR when an entry first runs, as it always does for an artifact file); a
//! built executable carries the code of every entry but the train step, which is
//! compiled when training starts. Whether the code may
//! run at all is the runtime's decision: only an executable running the artifact
//! appended to itself trusts it, and only on a host with every feature the code was
//! compiled for; otherwise the kernel IR is compiled as usual.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::ArtifactError;
use crate::manifest::Manifest;

/// Kernels compiled for one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineCode {
    /// The target triple the code is for (`x86_64-unknown-linux-gnu`).
    pub target: String,
    /// The code generator's features the code was compiled with (`has_avx2`, …): a host
    /// that lacks one of them cannot run it.
    pub features: Vec<String>,
    /// What generated the code (its name and version), for `info` and for refusing code
    /// from another code generator's calling convention.
    pub generator: String,
    /// Where each kernel function's code lies in [`MachineCode::code`].
    pub functions: Vec<FunctionCode>,
    /// The functions' bytes, each at its offset; position independent, calling nothing.
    #[serde(skip)]
    pub code: Vec<u8>,
}

/// One compiled kernel function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCode {
    /// The kernel function's name (`Kernel::function_names`).
    pub name: String,
    pub offset: u64,
    pub len: u64,
}

/// Every function starts at a multiple of this many bytes (a cache line).
pub const FUNCTION_ALIGN: u64 = 64;

impl MachineCode {
    /// The section's bytes (the layout in the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(self).expect("strings and integers serialize");
        let mut out = Vec::with_capacity(8 + header.len() + self.code.len());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.code);
        out
    }

    /// Parses a section; `None` when it is empty (no machine code).
    pub fn from_bytes(bytes: &[u8]) -> Result<Option<MachineCode>, ArtifactError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let bad = |reason: String| ArtifactError::BadMachineCode { reason };
        let (len, rest) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| bad("shorter than its header length".into()))?;
        let len = usize::try_from(u64::from_le_bytes(*len))
            .ok()
            .filter(|&l| l <= rest.len())
            .ok_or_else(|| bad("its header is longer than the section".into()))?;
        let (header, code) = rest.split_at(len);
        let mut machine: MachineCode =
            serde_json::from_slice(header).map_err(|e| bad(format!("header: {e}")))?;
        machine.code = code.to_vec();
        Ok(Some(machine))
    }

    /// Checks that every function lies inside the code, aligned, without overlapping
    /// another (functions may share one span: kernels that differ only in names), and is
    /// a kernel function of `manifest`. Not every kernel need have code:
    /// those without are compiled when first run.
    pub fn validate(&self, manifest: &Manifest) -> Result<(), ArtifactError> {
        let bad = |reason: String| ArtifactError::BadMachineCode { reason };
        let mut spans: Vec<(u64, u64, &str)> = Vec::with_capacity(self.functions.len());
        let mut names = HashSet::new();
        for f in &self.functions {
            let end = f.offset.checked_add(f.len);
            if f.len == 0 || end.is_none_or(|e| e > self.code.len() as u64) {
                return Err(bad(format!(
                    "function `{}` ({} bytes at {}) is not inside the {} bytes of code",
                    f.name,
                    f.len,
                    f.offset,
                    self.code.len()
                )));
            }
            if f.offset % FUNCTION_ALIGN != 0 {
                return Err(bad(format!(
                    "function `{}` starts at {}, not a multiple of {FUNCTION_ALIGN}",
                    f.name, f.offset
                )));
            }
            if !names.insert(f.name.as_str()) {
                return Err(bad(format!("function `{}` appears twice", f.name)));
            }
            spans.push((f.offset, f.offset + f.len, &f.name));
        }
        let kernel_functions: HashSet<String> = manifest
            .kernels
            .iter()
            .flat_map(|k| k.function_names())
            .collect();
        if let Some(extra) = names.iter().find(|n| !kernel_functions.contains(**n)) {
            return Err(bad(format!(
                "code for `{extra}`, which is no kernel function"
            )));
        }
        spans.sort_unstable();
        // Functions of kernels that compiled to the same code share it: the same span is
        // one function, a span reaching into another is refused.
        let shared = |a: &(u64, u64, &str), b: &(u64, u64, &str)| a.0 == b.0 && a.1 == b.1;
        if let Some(w) = spans
            .windows(2)
            .find(|w| w[0].1 > w[1].0 && !shared(&w[0], &w[1]))
        {
            return Err(bad(format!(
                "functions `{}` and `{}` overlap",
                w[0].2, w[1].2
            )));
        }
        Ok(())
    }

    /// The bytes of one function, if it is listed.
    pub fn function(&self, name: &str) -> Option<&[u8]> {
        let f = self.functions.iter().find(|f| f.name == name)?;
        self.code
            .get(f.offset as usize..(f.offset + f.len) as usize)
    }
}
