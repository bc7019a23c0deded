//! A compact, versioned binary encoding of one token's state, for the state
//! changelog (issue 14): a leading format version, then every field in a
//! fixed order, little-endian. A newer tokenwatch reads every older version
//! (each version's layout stays decodable here, tested against a record
//! written by it); an unknown newer version is refused, never guessed at.
//!
//! Each state type writes and reads its own fields ([`Codec`]), so private
//! fields stay private to their detector.
//!
//! Formats:
//! - 1: the token's fields (first and last seen, events, volume, geo,
//!   novelty).
//! - 2: format 1, then the [`Position`] of the last event applied (so a
//!   redelivered event is not counted twice), then the principal the
//!   token's events name (so a restored token lands in its principal's
//!   shard). A format-1 record reads with no position and no principal.

use super::{Position, TokenState};

/// The format this build writes.
pub const FORMAT_VERSION: u8 = 2;

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("state record is empty")]
    Empty,
    #[error("state record format {0} is newer than this build reads (up to {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    #[error("state record ends early: a field lacks {0} bytes")]
    Truncated(usize),
    #[error("state record has {0} bytes after its end")]
    Trailing(usize),
    #[error("state record's principal is not UTF-8")]
    NotUtf8,
}

/// Appends little-endian fields.
#[derive(Debug, Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

/// Reads little-endian fields, failing at the end of the bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    /// The format version the record was written in.
    pub version: u8,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let Some((head, rest)) = self.bytes.split_first_chunk::<N>() else {
            return Err(CodecError::Truncated(N - self.bytes.len()));
        };
        self.bytes = rest;
        Ok(*head)
    }
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    pub fn i16(&mut self) -> Result<i16, CodecError> {
        Ok(i16::from_le_bytes(self.take()?))
    }
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    pub fn i32(&mut self) -> Result<i32, CodecError> {
        Ok(i32::from_le_bytes(self.take()?))
    }
    pub fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(CodecError::Truncated(n - self.bytes.len()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    pub fn f32(&mut self) -> Result<f32, CodecError> {
        Ok(f32::from_le_bytes(self.take()?))
    }
}

/// A state type that writes and reads its own fields.
pub trait Codec: Sized {
    fn put(&self, w: &mut Writer);
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError>;
}

impl<T: Codec + Copy + Default, const N: usize> Codec for [T; N] {
    fn put(&self, w: &mut Writer) {
        for item in self {
            item.put(w);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let mut out = [T::default(); N];
        for item in &mut out {
            *item = T::get(r)?;
        }
        Ok(out)
    }
}

impl Codec for TokenState {
    fn put(&self, w: &mut Writer) {
        w.u32(self.first_seen_s);
        w.u32(self.last_seen_s);
        w.u32(self.events);
        self.volume.put(w);
        self.geo.put(w);
        self.novelty.put(w);
        self.position.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(TokenState {
            first_seen_s: r.u32()?,
            last_seen_s: r.u32()?,
            events: r.u32()?,
            volume: Codec::get(r)?,
            geo: Codec::get(r)?,
            novelty: Codec::get(r)?,
            position: if r.version >= 2 {
                Codec::get(r)?
            } else {
                Position::default()
            },
        })
    }
}

impl Codec for Position {
    fn put(&self, w: &mut Writer) {
        w.u16(self.topic);
        w.i32(self.partition);
        w.i64(self.offset);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Position {
            topic: r.u16()?,
            partition: r.i32()?,
            offset: r.i64()?,
        })
    }
}

/// Marks a record with no principal (a principal is at most 65,534 bytes).
const NO_PRINCIPAL: u16 = u16::MAX;

/// `state` (and the principal its events name) in the current format.
pub fn encode(state: &TokenState, principal: Option<&str>) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(320));
    w.u8(FORMAT_VERSION);
    state.put(&mut w);
    match principal {
        Some(p) if p.len() < usize::from(NO_PRINCIPAL) => {
            w.u16(p.len() as u16);
            w.0.extend_from_slice(p.as_bytes());
        }
        // A longer one is not kept: the token then routes by its own id.
        _ => w.u16(NO_PRINCIPAL),
    }
    w.0
}

/// A state record in this format or any older one, with its principal.
pub fn decode(bytes: &[u8]) -> Result<(TokenState, Option<String>), CodecError> {
    let (&version, rest) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version == 0 || version > FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let mut r = Reader {
        bytes: rest,
        version,
    };
    let state = TokenState::get(&mut r)?;
    let principal = if version >= 2 {
        match r.u16()? {
            NO_PRINCIPAL => None,
            n => Some(
                String::from_utf8(r.bytes(usize::from(n))?.to_vec())
                    .map_err(|_| CodecError::NotUtf8)?,
            ),
        }
    } else {
        None
    };
    match r.bytes.len() {
        0 => Ok((state, principal)),
        n => Err(CodecError::Trailing(n)),
    }
}

#[cfg(test)]
mod tests;
