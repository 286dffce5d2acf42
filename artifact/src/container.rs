//! The artifact's byte layout.
//!
//! ```text
//! offset      size  field
//! 0           8     MAGIC, b"\x89STRATA\n"
//! 8           4     format version, u32 LE (FORMAT_VERSION)
//! 12          8     manifest length M, u64 LE
//! 20          8     CLIF length C, u64 LE
//! 28          8     WGSL length G, u64 LE (0: no GPU code)
//! 36          8     weights length W, u64 LE
//! 44          8     machine code length N, u64 LE (0: none)
//! 52          8     ONNX length X, u64 LE (0: none)
//! 60          M     manifest, JSON (UTF-8), then spaces up to the weights' alignment
//! 60+M        C     CLIF text (UTF-8; empty in a built executable)
//! 60+M+C      G     WGSL text (UTF-8)
//! 60+M+C+G    W     weights, a safetensors file (optimizer state at zero left out)
//! 60+M+C+G+W  N     machine code (crate::machine_code)
//! …+N         X     `infer` as ONNX without its parameters' values (protobuf)
//! …+X         4     CRC-32 (IEEE) of every byte before it, u32 LE
//! ```
//!
//! Version 2 added the WGSL section, 3 windows, loops and train steps in the manifest,
//! 4 the I/O block (`Location::Io`), 5 contractions summed over batch axes
//! (`Contraction::summed`), 6 the machine code and ONNX sections, 7 rows of `(batch, n)`
//! pairs, 8 window operands (`MatrixOperand::window`); files of other versions are
//! refused (rebuild them).
//!
//! The weights start at a multiple of 64 bytes (the manifest's trailing spaces see to
//! it; a reader does not depend on it): in an aligned mapping, a run reads them in place.
//!
//! The magic follows PNG's trick: a high first byte catches 7-bit transfers and the
//! trailing `\n` catches newline conversion. The version is read before the checksum, so
//! a file from another format version says so instead of looking corrupt. Nothing after
//! the checksum is allowed: an artifact is exactly as long as its header says.

use std::io::Write;
use std::ops::Range;

use strata_kernels::ir::{Expr, KernelBody};

use super::Artifact;
use crate::error::ArtifactError;
use crate::{Bytes, MachineCode};

/// The first eight bytes of every artifact.
pub const MAGIC: [u8; 8] = *b"\x89STRATA\n";

/// The layout version this runtime writes and reads.
/// 7: a map's or reduction's CPU function over `[batch, n, ...]` takes rows of
/// `(batch, n)` pairs (`strata_kernels::cpu::row_dims`), so CLIF of 6 would run wrong.
/// 8: a product's right-hand operand may be a convolution's window over an image
/// (`MatrixOperand::window`), which a reader of 7 would take for a matrix of zero strides.
pub const FORMAT_VERSION: u32 = 8;

const HEADER_LEN: usize = 8 + 4 + 6 * 8;

/// The weights section starts at a multiple of this many bytes of the artifact.
const WEIGHTS_ALIGN: usize = 64;

/// The buffer the manifest's JSON is written through.
const JSON_BUFFER: usize = 1 << 16;
const CHECKSUM_LEN: usize = 4;

impl Artifact {
    /// Serializes the artifact in the layout above.
    ///
    /// Fails only if the manifest holds a value JSON cannot carry: a non-finite kernel
    /// constant (serde_json would write `null`, which could not be read back).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ArtifactError> {
        let mut out = Vec::with_capacity(self.byte_len_estimate());
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Writes the bytes of [`Artifact::to_bytes`] to `out` without holding them all in
    /// memory (the checksum is computed as they go), and returns how many it wrote: an
    /// executable's artifact is mostly weights, which need not exist twice.
    pub fn write_to(&self, out: &mut impl Write) -> Result<u64, ArtifactError> {
        check_representable(self)?;
        // The manifest's JSON is written twice, counted then streamed, rather than held:
        // a deep model's manifest is tens of megabytes.
        // Through a buffer: serde_json writes a few bytes at a time, and every write
        // reaching `Counted` or `Checksummed` was a call of its own (a twentieth of a deep
        // model's build).
        let mut counted = std::io::BufWriter::with_capacity(JSON_BUFFER, Counted(0));
        serde_json::to_writer(&mut counted, &self.manifest)
            .map_err(|e| ArtifactError::Unrepresentable(e.to_string()))?;
        let mut counted = counted
            .into_inner()
            .map_err(|e| ArtifactError::Write(e.into_error()))?;
        // Spaces after the manifest's JSON (which a JSON reader skips) start the weights
        // at a multiple of 64 bytes: an aligned artifact's weights are read in place.
        let before_weights =
            HEADER_LEN as u64 + counted.0 + (self.clif.len() + self.wgsl.len()) as u64;
        let padding = crate::bytes::padding_to(before_weights, WEIGHTS_ALIGN);
        counted.0 += padding as u64;
        let machine_code = self
            .machine_code
            .as_ref()
            .map(|m| m.to_bytes())
            .unwrap_or_default();
        let lengths = [
            counted.0,
            self.clif.len() as u64,
            self.wgsl.len() as u64,
            self.weights.len() as u64,
            machine_code.len() as u64,
            self.onnx.len() as u64,
        ];
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for len in lengths {
            header.extend_from_slice(&len.to_le_bytes());
        }
        let mut body = Checksummed {
            out: &mut *out,
            crc: crc32fast::Hasher::new(),
        };
        body.write_all(&header).map_err(ArtifactError::Write)?;
        let mut buffered = std::io::BufWriter::with_capacity(JSON_BUFFER, &mut body);
        serde_json::to_writer(&mut buffered, &self.manifest)
            .map_err(|e| ArtifactError::Write(e.into()))?;
        buffered.flush().map_err(ArtifactError::Write)?;
        drop(buffered);
        body.write_all(&[b' '; WEIGHTS_ALIGN][..padding])
            .map_err(ArtifactError::Write)?;
        for section in [
            self.clif.as_bytes(),
            self.wgsl.as_bytes(),
            &self.weights[..],
            &machine_code,
            &self.onnx,
        ] {
            body.write_all(section).map_err(ArtifactError::Write)?;
        }
        let crc = body.crc.finalize();
        out.write_all(&crc.to_le_bytes())
            .map_err(ArtifactError::Write)?;
        Ok((HEADER_LEN + CHECKSUM_LEN) as u64 + lengths.iter().sum::<u64>())
    }

    /// The serialized size, give or take the manifest's JSON.
    fn byte_len_estimate(&self) -> usize {
        let machine_code = self.machine_code.as_ref().map_or(0, |m| m.code.len());
        HEADER_LEN
            + self.clif.len()
            + self.wgsl.len()
            + self.weights.len()
            + machine_code
            + self.onnx.len()
            + CHECKSUM_LEN
    }

    /// Parses and validates an artifact; any defect is an error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Artifact, ArtifactError> {
        Artifact::parse(bytes, |range| Bytes::from(bytes[range].to_vec()))
    }

    /// [`Artifact::from_bytes`], keeping the weights as a view of `bytes` instead of a
    /// copy (a built executable's start, reading its own mapped file).
    pub fn from_shared(bytes: &Bytes) -> Result<Artifact, ArtifactError> {
        Artifact::parse(bytes, |range| bytes.slice(range))
    }

    /// Parses `bytes`; `weights` gives the weights section's bytes from its range.
    fn parse(
        bytes: &[u8],
        weights: impl FnOnce(Range<usize>) -> Bytes,
    ) -> Result<Artifact, ArtifactError> {
        let got = bytes.len() as u64;
        let mut reader = Reader { bytes, pos: 0 };
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            return Err(ArtifactError::Truncated {
                needed: (HEADER_LEN + CHECKSUM_LEN) as u64,
                got,
            });
        }
        // `ok_or_else`: the error keeps the (fewer than 8) bytes found; built eagerly, as
        // `ok_or` did, it copied the whole artifact at every start of an executable.
        let magic = reader
            .take(MAGIC.len())
            .ok_or_else(|| ArtifactError::BadMagic {
                found: bytes.to_vec(),
            })?;
        if magic != MAGIC {
            return Err(ArtifactError::BadMagic {
                found: magic.to_vec(),
            });
        }
        let truncated = ArtifactError::Truncated {
            needed: (HEADER_LEN + CHECKSUM_LEN) as u64,
            got,
        };
        let version = reader.u32().ok_or(truncated)?;
        if version != FORMAT_VERSION {
            return Err(ArtifactError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let mut lengths = [0u64; 6];
        for len in &mut lengths {
            *len = reader.u64().ok_or(ArtifactError::Truncated {
                needed: (HEADER_LEN + CHECKSUM_LEN) as u64,
                got,
            })?;
        }
        let needed = lengths
            .iter()
            .try_fold((HEADER_LEN + CHECKSUM_LEN) as u64, |acc, &l| {
                acc.checked_add(l)
            })
            .unwrap_or(u64::MAX);
        if needed > got {
            return Err(ArtifactError::Truncated { needed, got });
        }
        if needed < got {
            return Err(ArtifactError::TrailingBytes {
                extra: got - needed,
            });
        }
        // `needed == got` fits in usize, so every length below does too.
        let body_len = bytes.len() - CHECKSUM_LEN;
        let (body, stored) = bytes.split_at(body_len);
        let stored = u32::from_le_bytes(to_array(stored));
        let computed = crc32fast::hash(body);
        // A fuzzing build reads on past a wrong checksum: the fuzzer cannot fix one up,
        // and everything after it (manifest, validation) is what it is there to reach.
        if stored != computed && !cfg!(fuzzing) {
            return Err(ArtifactError::Checksum { stored, computed });
        }
        let [
            manifest_len,
            clif_len,
            wgsl_len,
            weights_len,
            machine_len,
            onnx_len,
        ] = lengths.map(|l| l as usize);
        let manifest = reader.take(manifest_len).unwrap_or_default();
        let clif = reader.take(clif_len).unwrap_or_default();
        let wgsl = reader.take(wgsl_len).unwrap_or_default();
        let weights_at = reader.pos;
        reader.take(weights_len);
        let machine_code = reader.take(machine_len).unwrap_or_default();
        let onnx = reader.take(onnx_len).unwrap_or_default();

        let manifest = std::str::from_utf8(manifest).map_err(|source| ArtifactError::NotUtf8 {
            section: "manifest",
            source,
        })?;
        let manifest = serde_json::from_str(manifest).map_err(ArtifactError::ManifestJson)?;
        let clif = std::str::from_utf8(clif).map_err(|source| ArtifactError::NotUtf8 {
            section: "CLIF",
            source,
        })?;
        let wgsl = std::str::from_utf8(wgsl).map_err(|source| ArtifactError::NotUtf8 {
            section: "WGSL",
            source,
        })?;
        let artifact = Artifact {
            manifest,
            clif: clif.to_owned(),
            wgsl: wgsl.to_owned(),
            // `needed == got`: the section is inside `bytes`.
            weights: weights(weights_at..weights_at + weights_len),
            machine_code: MachineCode::from_bytes(machine_code)?,
            onnx: onnx.to_vec(),
        };
        artifact.validate()?;
        Ok(artifact)
    }
}

/// Reads fixed-size little-endian fields off the front of a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(to_array(b)))
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(to_array(b)))
    }
}

/// The first `N` bytes of `b` (zero-padded if shorter; callers pass exactly `N`).
fn to_array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = b.len().min(N);
    out[..n].copy_from_slice(&b[..n]);
    out
}

/// A writer that only counts bytes.
struct Counted(u64);

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer that keeps the CRC-32 of what goes through it.
struct Checksummed<'w, W: Write> {
    out: &'w mut W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Checksummed<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Refuses kernel constants that JSON cannot carry.
fn check_representable(artifact: &Artifact) -> Result<(), ArtifactError> {
    for kernel in &artifact.manifest.kernels {
        let mut exprs: Vec<&Expr> = Vec::new();
        for body in kernel.body.bodies() {
            match body {
                KernelBody::Map { stores, .. } => exprs.extend(stores.iter().map(|s| &s.value)),
                KernelBody::Reduce { value, out, .. } => {
                    exprs.push(value);
                    exprs.push(&out.value);
                }
                KernelBody::Contract(c) => exprs.push(&c.epilogue),
                KernelBody::ScatterAdd(s) => exprs.push(&s.value),
                // `bodies` never yields parts.
                KernelBody::Parts(_) => {}
            }
        }
        for expr in exprs {
            if let Some(c) = non_finite_constant(expr) {
                return Err(ArtifactError::Unrepresentable(format!(
                    "kernel `{}` holds the constant {c}, which JSON cannot represent",
                    kernel.name
                )));
            }
        }
    }
    Ok(())
}

fn non_finite_constant(expr: &Expr) -> Option<f64> {
    match expr {
        Expr::Const(c) if !c.is_finite() => Some(*c),
        Expr::Const(_)
        | Expr::Load { .. }
        | Expr::Gather { .. }
        | Expr::Acc
        | Expr::IndexValue(_) => None,
        Expr::Unary(_, x) | Expr::Uniform { step: x, .. } | Expr::Reduce { value: x, .. } => {
            non_finite_constant(x)
        }
        Expr::Binary(_, a, b) => non_finite_constant(a).or_else(|| non_finite_constant(b)),
        Expr::Select {
            cond,
            then,
            otherwise,
        } => non_finite_constant(cond)
            .or_else(|| non_finite_constant(then))
            .or_else(|| non_finite_constant(otherwise)),
    }
}
