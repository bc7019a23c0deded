//! A compact, versioned binary encoding of one token's state, for the state
//! changelog (issue 14): a leading format version, then every field in a
//! fixed order, little-endian. A newer tokenwatch reads every older version
//! (each version's layout stays decodable here, tested against a record
//! written by it); an unknown newer version is refused, never guessed at.
//!
//! Each state type writes and reads its own fields ([`Codec`]), so private
//! fields stay private to their detector.

use super::TokenState;

/// The format this build writes.
pub const FORMAT_VERSION: u8 = 1;

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
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(TokenState {
            first_seen_s: r.u32()?,
            last_seen_s: r.u32()?,
            events: r.u32()?,
            volume: Codec::get(r)?,
            geo: Codec::get(r)?,
            novelty: Codec::get(r)?,
        })
    }
}

/// `state` in the current format.
pub fn encode(state: &TokenState) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256));
    w.u8(FORMAT_VERSION);
    state.put(&mut w);
    w.0
}

/// A state record in this format or any older one.
pub fn decode(bytes: &[u8]) -> Result<TokenState, CodecError> {
    let (&version, rest) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version == 0 || version > FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let mut r = Reader {
        bytes: rest,
        version,
    };
    let state = TokenState::get(&mut r)?;
    match r.bytes.len() {
        0 => Ok(state),
        n => Err(CodecError::Trailing(n)),
    }
}

#[cfg(test)]
mod tests;
