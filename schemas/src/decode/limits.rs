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
    pub fn check(&self, bytes: &[u8]) -> Result<(), DecodeError> {
        // Per open array: elements seen so far (commas + 1). Objects push
        // `None`. The stack never grows past `max_depth`.
        let mut stack: Vec<Option<usize>> = Vec::with_capacity(self.max_depth.min(64));
        let mut in_string = false;
        let mut escaped = false;
        let mut pending_item = false;
        for &b in bytes {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => {
                    in_string = true;
                    self.item(&mut stack, &mut pending_item)?;
                }
                b'[' | b'{' => {
                    self.item(&mut stack, &mut pending_item)?;
                    if stack.len() == self.max_depth {
                        return Err(DecodeError::TooDeep);
                    }
                    stack.push((b == b'[').then_some(0));
                    pending_item = b == b'[';
                }
                b']' | b'}' => {
                    stack.pop();
                    pending_item = false;
                }
                b',' => {
                    pending_item = matches!(stack.last(), Some(Some(_)));
                }
                b' ' | b'\t' | b'\n' | b'\r' | b':' => {}
                _ => self.item(&mut stack, &mut pending_item)?,
            }
        }
        Ok(())
    }

    /// Counts the start of an array element, once.
    fn item(&self, stack: &mut [Option<usize>], pending: &mut bool) -> Result<(), DecodeError> {
        if !std::mem::take(pending) {
            return Ok(());
        }
        if let Some(Some(n)) = stack.last_mut() {
            *n += 1;
            if *n > self.max_array_items {
                return Err(DecodeError::TooManyItems);
            }
        }
        Ok(())
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
        // Brackets inside strings are text.
        assert_eq!(L.check(br#"{"a":"[[[[[[{{{{\"]]"}"#), Ok(()));
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
}
