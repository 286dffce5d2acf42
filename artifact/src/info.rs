//! A human-readable summary of a compiled model: its entries with their inputs and
//! outputs, its parameter count and its arena size. `strata info` and the executable's
//! `info` command print it; it needs only the manifest, so it never compiles code.

use std::fmt;

use strata_kernels::ir::{Dim, ScalarType};

use super::manifest::{EntryPort, Extent, Location, Manifest};
use crate::tensor::type_string;

/// One input or output of an entry.
#[derive(Clone, Debug, PartialEq)]
pub struct PortInfo {
    pub name: String,
    pub dtype: ScalarType,
    pub shape: Vec<Dim>,
}

/// One entry of the model.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryInfo {
    pub name: String,
    pub inputs: Vec<PortInfo>,
    pub outputs: Vec<PortInfo>,
}

/// What a compiled model takes, gives and needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub model: String,
    pub compiler: String,
    pub entries: Vec<EntryInfo>,
    /// Total elements of all persistent buffers.
    pub parameters: u64,
    /// Scratch memory for one run, in bytes.
    pub arena: Extent,
    /// The largest entry's inputs and outputs, in bytes.
    pub io: Extent,
}

impl ModelInfo {
    pub fn from_manifest(manifest: &Manifest) -> ModelInfo {
        let port = |p: &EntryPort| match manifest.buffers.get(p.buffer) {
            Some(b) => PortInfo {
                name: p.name.clone(),
                dtype: b.dtype,
                shape: b.shape.clone(),
            },
            None => PortInfo {
                name: p.name.clone(),
                dtype: ScalarType::F32,
                shape: Vec::new(),
            },
        };
        let entries = manifest
            .entries
            .iter()
            .map(|e| EntryInfo {
                name: e.name.clone(),
                inputs: e.inputs.iter().map(port).collect(),
                outputs: e.outputs.iter().map(port).collect(),
            })
            .collect();
        let parameters = manifest
            .buffers
            .iter()
            .filter(|b| matches!(b.location, Location::Persistent { .. }))
            .filter_map(|b| b.elements(1))
            .fold(0u64, u64::saturating_add);
        ModelInfo {
            model: manifest.model.clone(),
            compiler: manifest.compiler.clone(),
            entries,
            parameters,
            arena: manifest.arena,
            io: manifest.io,
        }
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes_text(e: Extent) -> String {
    match (e.fixed, e.per_batch) {
        (f, 0) => format!("{} bytes", grouped(f)),
        (0, p) => format!("{} bytes × batch", grouped(p)),
        (f, p) => format!("{} + {} × batch bytes", grouped(f), grouped(p)),
    }
}

impl fmt::Display for ModelInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model       {}", self.model)?;
        writeln!(f, "compiler    {}", self.compiler)?;
        writeln!(f, "parameters  {}", grouped(self.parameters))?;
        writeln!(f, "arena       {}", bytes_text(self.arena))?;
        write!(f, "I/O block   {}", bytes_text(self.io))?;
        for entry in &self.entries {
            let rows: Vec<(&str, &PortInfo)> = entry
                .inputs
                .iter()
                .map(|p| ("input", p))
                .chain(entry.outputs.iter().map(|p| ("output", p)))
                .collect();
            let width = rows.iter().map(|(_, p)| p.name.len()).max().unwrap_or(0);
            write!(f, "\n\nentry {}", entry.name)?;
            for (side, port) in rows {
                write!(
                    f,
                    "\n  {side:<6}  {:<width$}  {}",
                    port.name,
                    type_string(port.dtype, &port.shape)
                )?;
            }
        }
        Ok(())
    }
}
