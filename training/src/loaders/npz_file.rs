//! NumPy's `.npz` archives (`np.savez`, `np.savez_compressed`): a ZIP file holding one
//! `NAME.npy` member per array.
//!
//! Only what an `.npz` needs of ZIP is read (APPNOTE 6.3.10): the end of central
//! directory record (and its ZIP64 form, which NumPy's large archives use), the central
//! directory's file headers (with their ZIP64 extra field: NumPy writes every member with
//! `force_zip64`), and each member's local header, to find its data. Members are stored
//! or deflated; flate2, already the crate's gzip decoder, inflates them, and each
//! member's CRC-32 is checked. Encrypted, multi-disk or otherwise compressed archives are
//! refused with a message. A full ZIP library would add a dependency for these few
//! records.
//!
//! Every count and offset comes from the file, so each is checked against the bytes
//! before it is used, and a member inflates to at most its declared size and the
//! crate's limit on decompressed data ([`super::decompressed_limit`]).

use std::io::Read;

use crate::error::{DataError, Location};

/// One member of the archive, located by the central directory.
#[derive(Clone, Debug)]
struct Member {
    name: String,
    method: u16,
    flags: u16,
    crc: u32,
    compressed: u64,
    size: u64,
    local_header: u64,
}

/// An `.npz` archive read into memory: its members by name, decompressed on request.
pub struct NpzArchive {
    bytes: Vec<u8>,
    members: Vec<Member>,
    file: String,
}

const EOCD: u32 = 0x0605_4b50;
const EOCD64: u32 = 0x0606_4b50;
const EOCD64_LOCATOR: u32 = 0x0706_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl NpzArchive {
    /// Reads the archive's directory; `file` names it in errors.
    pub fn parse(bytes: Vec<u8>, file: &str) -> Result<NpzArchive, DataError> {
        let bad = |at: Location, message: String| DataError::malformed(file, at, message);
        let not_zip = || {
            bad(
                Location::File,
                "not an .npz file (a ZIP archive of .npy files): no end of central directory \
                 record"
                    .into(),
            )
        };
        // The end record is the last 22 bytes, before a comment of up to 65535 bytes.
        let last = bytes.len().checked_sub(22).ok_or_else(not_zip)?;
        let first = last.saturating_sub(65_535);
        let eocd = (first..=last)
            .rev()
            .find(|&at| u32_at(&bytes, at) == Some(EOCD))
            .ok_or_else(not_zip)?;
        let field = |at: usize| u16_at(&bytes, eocd + at).ok_or_else(not_zip);
        if field(4)? != 0 || field(6)? != 0 {
            return Err(bad(
                Location::Offset(eocd as u64),
                "a multi-disk archive; write the .npz as one file".into(),
            ));
        }
        let mut entries = u64::from(field(10)?);
        let mut cd_size = u64::from(u32_at(&bytes, eocd + 12).ok_or_else(not_zip)?);
        let mut cd_offset = u64::from(u32_at(&bytes, eocd + 16).ok_or_else(not_zip)?);
        // ZIP64: the counts live in the ZIP64 end record, found through its locator.
        if (entries == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff)
            && let Some(locator) = eocd.checked_sub(20)
            && u32_at(&bytes, locator) == Some(EOCD64_LOCATOR)
        {
            let record = u64_at(&bytes, locator + 8)
                .and_then(|o| usize::try_from(o).ok())
                .filter(|&o| u32_at(&bytes, o) == Some(EOCD64))
                .ok_or_else(|| {
                    bad(
                        Location::Offset(locator as u64),
                        "the ZIP64 end of central directory locator points nowhere".into(),
                    )
                })?;
            let read = |at: usize| u64_at(&bytes, record + at).ok_or_else(not_zip);
            entries = read(32)?;
            cd_size = read(40)?;
            cd_offset = read(48)?;
        }
        let directory = usize::try_from(cd_offset)
            .ok()
            .zip(usize::try_from(cd_size).ok())
            .and_then(|(o, s)| Some(o..o.checked_add(s)?))
            .filter(|r| r.end <= bytes.len())
            .ok_or_else(|| {
                bad(
                    Location::Offset(eocd as u64),
                    format!(
                        "the central directory ({cd_size} bytes at offset {cd_offset}) lies \
                         outside the file's {} bytes",
                        bytes.len()
                    ),
                )
            })?;
        let mut members = Vec::new();
        let mut at = directory.start;
        // Each header is at least 46 bytes, so the count cannot make this loop long.
        for _ in 0..entries {
            let member = read_central_header(&bytes, at, directory.end).map_err(|message| {
                bad(
                    Location::Offset(at as u64),
                    format!("central directory: {message}"),
                )
            })?;
            at = member.1;
            members.push(member.0);
        }
        Ok(NpzArchive {
            bytes,
            members,
            file: file.to_string(),
        })
    }

    /// The arrays' names: the members' names without `.npy`, in the archive's order.
    pub fn names(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.name.strip_suffix(".npy").unwrap_or(&m.name).to_string())
            .collect()
    }

    /// The `.npy` bytes of array `name` (member `name.npy`), or None if there is none.
    pub fn npy_bytes(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, DataError> {
        let wanted = format!("{name}.npy");
        let Some(member) = self.members.iter().find(|m| m.name == wanted) else {
            return Ok(None);
        };
        let bad = |message: String| {
            DataError::malformed(
                &self.file,
                Location::Offset(member.local_header),
                format!("member `{}`: {message}", member.name),
            )
        };
        if member.flags & 1 != 0 {
            return Err(bad("it is encrypted".into()));
        }
        let local = usize::try_from(member.local_header)
            .ok()
            .filter(|&at| u32_at(&self.bytes, at) == Some(LOCAL))
            .ok_or_else(|| bad("no local file header where the directory says".into()))?;
        let name_len = u16_at(&self.bytes, local + 26).ok_or_else(|| bad("truncated".into()))?;
        let extra_len = u16_at(&self.bytes, local + 28).ok_or_else(|| bad("truncated".into()))?;
        let start = local + 30 + usize::from(name_len) + usize::from(extra_len);
        let data = usize::try_from(member.compressed)
            .ok()
            .and_then(|n| self.bytes.get(start..start.checked_add(n)?))
            .ok_or_else(|| {
                bad(format!(
                    "its {} bytes of data run past the end of the file",
                    member.compressed
                ))
            })?;
        if member.size > limit {
            return Err(bad(format!(
                "it holds {} bytes, more than the limit of {limit} on decompressed data \
                 (raise it with {}=BYTES)",
                member.size,
                super::DECOMPRESSED_LIMIT_VAR
            )));
        }
        let out = match member.method {
            0 => data.to_vec(),
            8 => {
                let mut out = Vec::new();
                flate2::read::DeflateDecoder::new(data)
                    .take(member.size.saturating_add(1))
                    .read_to_end(&mut out)
                    .map_err(|e| bad(format!("the deflated data is corrupt: {e}")))?;
                out
            }
            other => {
                return Err(bad(format!(
                    "compression method {other} (an .npz is stored or deflated)"
                )));
            }
        };
        if out.len() as u64 != member.size {
            return Err(bad(format!(
                "it holds {} bytes, the directory says {}",
                out.len(),
                member.size
            )));
        }
        let mut crc = flate2::Crc::new();
        crc.update(&out);
        if crc.sum() != member.crc {
            return Err(bad(format!(
                "CRC-32 {:08x}, the directory says {:08x}: the file is damaged",
                crc.sum(),
                member.crc
            )));
        }
        Ok(Some(out))
    }
}

/// The central directory file header at `at` (ending before `end`) and the offset of the
/// next one.
fn read_central_header(b: &[u8], at: usize, end: usize) -> Result<(Member, usize), String> {
    let truncated = || "a file header runs past the directory's end".to_string();
    if at + 46 > end {
        return Err(truncated());
    }
    if u32_at(b, at) != Some(CENTRAL) {
        return Err("no file header where one should start".into());
    }
    let h16 = |o: usize| u16_at(b, at + o).ok_or_else(truncated);
    let h32 = |o: usize| u32_at(b, at + o).ok_or_else(truncated);
    let (flags, method) = (h16(8)?, h16(10)?);
    let crc = h32(16)?;
    let mut compressed = u64::from(h32(20)?);
    let mut size = u64::from(h32(24)?);
    let (name_len, extra_len, comment_len) = (
        usize::from(h16(28)?),
        usize::from(h16(30)?),
        usize::from(h16(32)?),
    );
    let mut local_header = u64::from(h32(42)?);
    let name_at = at + 46;
    let extra_at = name_at + name_len;
    let next = extra_at + extra_len + comment_len;
    if next > end {
        return Err(truncated());
    }
    let name = std::str::from_utf8(&b[name_at..extra_at])
        .map_err(|_| "a member's name is not UTF-8".to_string())?
        .to_string();
    // The ZIP64 extra field holds, in this order, the sizes and offset whose 32-bit
    // fields are all ones.
    let mut extra = &b[extra_at..extra_at + extra_len];
    while extra.len() >= 4 {
        let id = u16::from_le_bytes([extra[0], extra[1]]);
        let len = usize::from(u16::from_le_bytes([extra[2], extra[3]]));
        let body = extra
            .get(4..4 + len)
            .ok_or("an extra field runs past its header")?;
        if id == 1 {
            let mut values = body
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()));
            let mut wide = |field: &mut u64| -> Result<(), String> {
                if *field == 0xffff_ffff {
                    *field = values.next().ok_or("the ZIP64 extra field is too short")?;
                }
                Ok(())
            };
            wide(&mut size)?;
            wide(&mut compressed)?;
            wide(&mut local_header)?;
        }
        extra = &extra[4 + len..];
    }
    Ok((
        Member {
            name,
            method,
            flags,
            crc,
            compressed,
            size,
            local_header,
        },
        next,
    ))
}
