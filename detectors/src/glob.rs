//! Glob patterns for scopes: `*` matches any run of characters (including
//! `/`), `?` exactly one; everything else matches itself.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<char>,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Glob {
            pattern: pattern.chars().collect(),
        }
    }

    pub fn as_string(&self) -> String {
        self.pattern.iter().collect()
    }

    /// Iterative matching with single-star backtracking: linear in practice,
    /// O(n·m) at worst, never exponential. ASCII text (the usual action) is
    /// matched without allocating.
    pub fn matches(&self, text: &str) -> bool {
        if text.is_ascii() {
            return match_units(&self.pattern, text.as_bytes(), |p, b| p == char::from(b));
        }
        let chars: Vec<char> = text.chars().collect();
        match_units(&self.pattern, &chars, |p, c| p == c)
    }
}

fn match_units<T: Copy>(p: &[char], t: &[T], eq: impl Fn(char, T) -> bool) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn matches_like_a_shell_glob_across_slashes() {
        let g = Glob::new("GET /v1/orders/*");
        assert!(g.matches("GET /v1/orders/123"));
        assert!(g.matches("GET /v1/orders/123/items"));
        assert!(!g.matches("POST /v1/orders/123"));
        assert!(!g.matches("GET /v1/orders"));
        assert!(Glob::new("s3:Get*").matches("s3:GetObject"));
        assert!(!Glob::new("s3:Get*").matches("s3:PutObject"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("a?c").matches("abc"));
        assert!(!Glob::new("a?c").matches("ac"));
        assert!(Glob::new("*a*b*c*").matches("xxaxxbxxcxx"));
        assert!(!Glob::new("*a*b*c*").matches("xxaxxcxxbxx"));
    }

    fn naive(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, _) => t.is_empty(),
            (Some('*'), _) => naive(&p[1..], t) || (!t.is_empty() && naive(p, &t[1..])),
            (Some('?'), Some(_)) => naive(&p[1..], &t[1..]),
            (Some(c), Some(d)) if c == d => naive(&p[1..], &t[1..]),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn agrees_with_a_recursive_reference(p in "[ab*?]{0,8}", t in "[ab]{0,10}") {
            let pc: Vec<char> = p.chars().collect();
            let tc: Vec<char> = t.chars().collect();
            prop_assert_eq!(Glob::new(&p).matches(&t), naive(&pc, &tc));
        }
    }
}
