/// Why a record could not become an event. Each variant maps to a fixed
/// reason string used in dead-letter headers and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    #[error("record is larger than the configured maximum size")]
    TooLarge,
    #[error("record is not valid UTF-8")]
    InvalidUtf8,
    #[error("record is not valid JSON")]
    InvalidJson,
    #[error("record is not a JSON object")]
    NotAnObject,
    #[error("required field `{0}` is missing, null or empty")]
    MissingField(&'static str),
    #[error("field `{0}` appears more than once")]
    DuplicateField(&'static str),
    #[error("field `{0}` has the wrong type or is out of range")]
    WrongType(&'static str),
    #[error("field `src_ip` is not an IPv4 or IPv6 address")]
    InvalidIp,
    #[error("field `ts` is neither RFC 3339 nor epoch milliseconds between 1970 and 9999")]
    InvalidTimestamp,
    #[error("record nests objects or arrays deeper than the configured maximum")]
    TooDeep,
    #[error("record has an array longer than the configured maximum")]
    TooManyItems,
    #[error("field `{0}` is a number out of range")]
    OutOfRange(&'static str),
    #[error("event time is further from now than the configured skew allows")]
    TimestampSkew,
    #[error("record is not of the expected kind (`{0}`)")]
    WrongKind(&'static str),
}

impl DecodeError {
    /// Every reason string, in [`index`](Self::index) order.
    pub const REASONS: [&'static str; 14] = [
        "too_large",
        "invalid_utf8",
        "invalid_json",
        "not_an_object",
        "missing_field",
        "duplicate_field",
        "wrong_type",
        "invalid_ip",
        "invalid_timestamp",
        "too_deep",
        "too_many_items",
        "out_of_range",
        "timestamp_skew",
        "wrong_kind",
    ];

    /// A dense index into [`REASONS`](Self::REASONS), for per-reason counters.
    pub fn index(&self) -> usize {
        match self {
            DecodeError::TooLarge => 0,
            DecodeError::InvalidUtf8 => 1,
            DecodeError::InvalidJson => 2,
            DecodeError::NotAnObject => 3,
            DecodeError::MissingField(_) => 4,
            DecodeError::DuplicateField(_) => 5,
            DecodeError::WrongType(_) => 6,
            DecodeError::InvalidIp => 7,
            DecodeError::InvalidTimestamp => 8,
            DecodeError::TooDeep => 9,
            DecodeError::TooManyItems => 10,
            DecodeError::OutOfRange(_) => 11,
            DecodeError::TimestampSkew => 12,
            DecodeError::WrongKind(_) => 13,
        }
    }

    /// A short, stable, machine-readable reason (`missing_field`, ...).
    pub fn reason(&self) -> &'static str {
        Self::REASONS[self.index()]
    }

    /// The field at fault, where there is one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            DecodeError::MissingField(f)
            | DecodeError::DuplicateField(f)
            | DecodeError::WrongType(f)
            | DecodeError::OutOfRange(f)
            | DecodeError::WrongKind(f) => Some(f),
            DecodeError::InvalidIp => Some("src_ip"),
            DecodeError::InvalidTimestamp | DecodeError::TimestampSkew => Some("ts"),
            _ => None,
        }
    }
}
