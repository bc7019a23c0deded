//! A pass over raw JSON bytes, before any parser allocates: nesting depth
//! and array lengths are checked in constant memory, so a hostile record
//! (a million nested brackets, an array of a million zeros) is refused
//! before it costs more than one read of its bytes.

use super::DecodeError;

/// Structural limits on one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of objects and arrays.
    pub max_depth: usize,
    /// Most elements in any one array.
    pub max_array_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 32,
            max_array_items: 10_000,
        }
    }
}

impl Limits {
    /// Checks `bytes` (JSON or not: invalid JSON is left to the parser).
    /// String contents, most of a record, are skipped with `memchr`; the
    /// open levels live on the stack up to depth 64, so the usual record
    /// costs no allocation.
    pub fn check(&self, bytes: &[u8]) -> Result<(), DecodeError> {
        let mut inline = [0u32; 64];
        let mut heap = Vec::new();
        let levels: &mut [u32] = if self.max_depth <= inline.len() {
            &mut inline[..self.max_depth]
        } else {
            heap.resize(self.max_depth, 0);
            &mut heap
        };
        self.scan(bytes, levels)
    }

    /// `levels[d]`: elements seen in the open array at depth `d`, or
    /// [`OBJECT`] for an object.
    fn scan(&self, bytes: &[u8], levels: &mut [u32]) -> Result<(), DecodeError> {
        let max_items = u32::try_from(self.max_array_items).unwrap_or(u32::MAX - 1);
        let mut depth = 0;
        // An array element starts at the next value (after `[` or `,`).
        let mut pending_item = false;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if pending_item && !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b']') {
                pending_item = false;
                let count = &mut levels[depth - 1];
                *count += 1;
                if *count > max_items {
                    return Err(DecodeError::TooManyItems);
                }
            }
            match b {
                b'"' => match closing_quote(&bytes[i + 1..]) {
                    Some(len) => i += len + 1,
                    // Unterminated: the parser says why.
                    None => return Ok(()),
                },
                b'[' | b'{' => {
                    if depth == self.max_depth {
                        return Err(DecodeError::TooDeep);
                    }
                    levels[depth] = if b == b'[' { 0 } else { OBJECT };
                    depth += 1;
                    pending_item = b == b'[';
                }
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    pending_item = false;
                }
                b',' => pending_item = depth > 0 && levels[depth - 1] != OBJECT,
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }
}

/// Marks an open object in the level stack.
const OBJECT: u32 = u32::MAX;

/// The length of a string's contents up to its closing quote (`text`
/// starts after the opening one), escapes skipped; `None` if unterminated.
fn closing_quote(text: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        at += memchr::memchr2(b'"', b'\\', &text[at..])?;
        if text[at] == b'"' {
            return Some(at);
        }
        at += 2;
        if at > text.len() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_depth: 4,
        max_array_items: 3,
    };

    #[test]
    fn counts_depth_of_objects_and_arrays() {
        assert_eq!(L.check(br#"{"a":{"b":[{"c":1}]}}"#), Ok(()));
        assert_eq!(
            L.check(br#"{"a":{"b":[{"c":[1]}]}}"#),
            Err(DecodeError::TooDeep)
        );
        assert_eq!(L.check(&[b'['; 100_000]), Err(DecodeError::TooDeep));
        // Brackets inside strings are text, escaped quotes included.
        assert_eq!(L.check(br#"{"a":"[[[[[[{{{{\"]]"}"#), Ok(()));
        assert_eq!(
            L.check(br#"{"a":"\\","b":[[[[[[]]]]]]}"#),
            Err(DecodeError::TooDeep)
        );
        assert_eq!(L.check(br#"{"a":"\\\"[[[[[[[[["}"#), Ok(()));
        // Unterminated strings and trailing escapes are left to the parser.
        assert_eq!(L.check(br#"{"a":"abc"#), Ok(()));
        assert_eq!(L.check(br#"{"a":"abc\"#), Ok(()));
    }

    #[test]
    fn counts_elements_per_array_not_per_record() {
        assert_eq!(L.check(br#"{"a":[1,2,3],"b":[4,5,6]}"#), Ok(()));
        assert_eq!(
            L.check(br#"{"a":[1,2,3,4]}"#),
            Err(DecodeError::TooManyItems)
        );
        assert_eq!(L.check(br#"[["a","b","c"],[],{"x":[1,2]}]"#), Ok(()));
        assert_eq!(L.check(br#"[[],[],[],[]]"#), Err(DecodeError::TooManyItems));
        assert_eq!(L.check(br#"["a,b,c,d,e"]"#), Ok(()));
        // Object members are not array items.
        assert_eq!(L.check(br#"{"a":1,"b":2,"c":3,"d":4,"e":5}"#), Ok(()));
    }

    fn depth_and_widest(v: &serde_json::Value) -> (usize, usize) {
        match v {
            serde_json::Value::Array(items) => {
                let (d, w) = items
                    .iter()
                    .map(depth_and_widest)
                    .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
                (d + 1, w.max(items.len()))
            }
            serde_json::Value::Object(map) => {
                let (d, w) = map
                    .values()
                    .map(depth_and_widest)
                    .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
                (d + 1, w)
            }
            _ => (0, 0),
        }
    }

    fn json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<i32>().prop_map(serde_json::Value::from),
            // Quotes, backslashes and brackets inside strings must not count.
            "[\\[\\]{}\\\\\",a ]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(8, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z\\[\\\\\"]{1,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_the_parsed_structure(value in json(), pretty in proptest::bool::ANY) {
            let text = if pretty { serde_json::to_string_pretty(&value) } else { serde_json::to_string(&value) }.unwrap();
            let (depth, widest) = depth_and_widest(&value);
            let result = L.check(text.as_bytes());
            if depth > L.max_depth || widest > L.max_array_items {
                proptest::prop_assert!(result.is_err(), "{text}: depth {depth}, widest {widest}");
            } else {
                proptest::prop_assert_eq!(result, Ok(()), "{}", text);
            }
        }
    }
}
