//! Turning raw user agents and actions into the coarse classes novelty
//! tracks. Coarse on purpose: a new version of the same client, or a new
//! order id, is not novel.

use std::borrow::Cow;

/// `text` lowercased, borrowed when it has no uppercase letter (the common
/// case for both user agents' product tokens and actions).
fn lowercase(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// Whether `haystack` contains `needle` (lowercase ASCII), ignoring case.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The product family of a user agent: the first product token, lowercased,
/// with browsers recognised by their distinctive tokens.
/// `aws-cli/2.13.5 Python/3.11` → `aws-cli`; a Chrome UA → `chrome`.
/// Borrowed from `ua` when it can be: this runs for every event.
pub fn user_agent_family(ua: &str) -> Cow<'_, str> {
    if ua
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("mozilla/"))
    {
        for (token, family) in [
            ("edg/", "edge"),
            ("opr/", "opera"),
            ("firefox/", "firefox"),
            ("chrome/", "chrome"),
            ("safari/", "safari"),
        ] {
            if contains_ignore_case(ua, token) {
                return Cow::Borrowed(family);
            }
        }
        return Cow::Borrowed("browser");
    }
    let first = ua
        .split(|c: char| c == '/' || c.is_whitespace() || c == ';' || c == '(')
        .next()
        .unwrap_or("");
    if first.is_empty() {
        return Cow::Borrowed("unknown");
    }
    let end = first.char_indices().nth(48).map_or(first.len(), |(i, _)| i);
    lowercase(&first[..end])
}

fn is_id(segment: &str) -> bool {
    !segment.is_empty()
        && (segment.bytes().all(|b| b.is_ascii_digit())
            || (segment.len() >= 16 && segment.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
            || (segment.starts_with('{') && segment.ends_with('}')))
}

/// The class of an action:
/// - HTTP (`GET /v1/orders/123?x=1`): method and the first two path
///   segments, ids replaced by `{id}` → `GET /v1/orders`;
/// - `service:Operation` (`s3:GetObject`): service and the operation's
///   leading verb → `s3:Get`;
/// - anything else (`repo.download_zip`): as it is, lowercased.
///
/// Borrowed from `action` when the class is a prefix of it, as it mostly is.
pub fn action_class(action: &str) -> Cow<'_, str> {
    let action = action.trim();
    if let Some((method, path)) = action.split_once(' ')
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && path.starts_with('/')
    {
        let path = path.split(['?', '#']).next().unwrap_or("");
        // The first two segments, without a per-event allocation.
        let mut nonempty = path.split('/').filter(|s| !s.is_empty());
        let first_two = [nonempty.next(), nonempty.next()];
        let segments = first_two.iter().flatten().copied();
        let kept = segments.clone().map(|s| s.len() + 1).sum::<usize>();
        // The class is `method /a/b` itself when no segment is an id and
        // none was separated by an empty one (`//`).
        if !segments.clone().any(is_id)
            && path
                .get(..kept)
                .is_some_and(|p| p.split('/').skip(1).eq(segments.clone()))
        {
            return Cow::Borrowed(&action[..method.len() + 1 + kept.max(1)]);
        }
        let mut class = format!("{method} ");
        for s in segments {
            class.push('/');
            class.push_str(if is_id(s) { "{id}" } else { s });
        }
        if first_two[0].is_none() {
            class.push('/');
        }
        return Cow::Owned(class);
    }
    if let Some((service, op)) = action.split_once(':') {
        let verb = op
            .char_indices()
            .take_while(|(i, c)| c.is_ascii_alphanumeric() && (*i == 0 || !c.is_ascii_uppercase()))
            .count();
        // ASCII alphanumerics: the count is a byte length.
        return Cow::Borrowed(&action[..service.len() + 1 + verb]);
    }
    lowercase(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_families() {
        assert_eq!(
            user_agent_family("aws-cli/2.13.5 Python/3.11.6 Linux/6.1"),
            "aws-cli"
        );
        assert_eq!(user_agent_family("aws-cli/2.15.0 Python/3.12"), "aws-cli");
        assert_eq!(
            user_agent_family("python-requests/2.31.0"),
            "python-requests"
        );
        assert_eq!(user_agent_family("curl/8.4.0"), "curl");
        assert_eq!(
            user_agent_family(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
            ),
            "chrome"
        );
        assert_eq!(
            user_agent_family(
                "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
            ),
            "firefox"
        );
        assert_eq!(user_agent_family(""), "unknown");
    }

    #[test]
    fn action_classes() {
        assert_eq!(action_class("GET /v1/orders/123"), "GET /v1/orders");
        assert_eq!(action_class("GET /v1/orders/{id}"), "GET /v1/orders");
        assert_eq!(action_class("GET /v1/orders?limit=5"), "GET /v1/orders");
        assert_eq!(
            action_class("DELETE /admin/users/42"),
            "DELETE /admin/users"
        );
        assert_eq!(action_class("GET /42"), "GET /{id}");
        assert_eq!(action_class("GET /"), "GET /");
        assert_eq!(action_class("s3:GetObject"), "s3:Get");
        assert_eq!(action_class("s3:ListBuckets"), "s3:List");
        assert_eq!(action_class("iam:CreateAccessKey"), "iam:Create");
        assert_eq!(action_class("repo.download_zip"), "repo.download_zip");
        assert_eq!(action_class("Repo.Download"), "repo.download");
        assert_eq!(action_class("GET //v1//orders/7"), "GET /v1/orders");
        assert_eq!(action_class("GET /v1/123/x"), "GET /v1/{id}");
        assert_eq!(action_class("  GET /v1/orders/7  "), "GET /v1/orders");
    }

    #[test]
    fn common_classes_are_borrowed() {
        for action in ["GET /v1/orders/{id}", "s3:GetObject", "repo.download_zip"] {
            assert!(matches!(action_class(action), Cow::Borrowed(_)), "{action}");
        }
        for ua in ["orders-client/3.2.1 (linux)", "Mozilla/5.0 Firefox/121.0"] {
            assert!(matches!(user_agent_family(ua), Cow::Borrowed(_)), "{ua}");
        }
        assert_eq!(user_agent_family("Boto3/1.34 Python/3.12"), "boto3");
    }
}
