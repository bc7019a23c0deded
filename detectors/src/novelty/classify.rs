//! Turning raw user agents and actions into the coarse classes novelty
//! tracks. Coarse on purpose: a new version of the same client, or a new
//! order id, is not novel.

/// The product family of a user agent: the first product token, lowercased,
/// with browsers recognised by their distinctive tokens.
/// `aws-cli/2.13.5 Python/3.11` → `aws-cli`; a Chrome UA → `chrome`.
pub fn user_agent_family(ua: &str) -> String {
    let lower = ua.to_ascii_lowercase();
    if lower.starts_with("mozilla/") {
        for (token, family) in [
            ("edg/", "edge"),
            ("opr/", "opera"),
            ("firefox/", "firefox"),
            ("chrome/", "chrome"),
            ("safari/", "safari"),
        ] {
            if lower.contains(token) {
                return family.to_string();
            }
        }
        return "browser".to_string();
    }
    let first = lower
        .split(|c: char| c == '/' || c.is_whitespace() || c == ';' || c == '(')
        .next()
        .unwrap_or("");
    if first.is_empty() {
        "unknown".to_string()
    } else {
        first.chars().take(48).collect()
    }
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
pub fn action_class(action: &str) -> String {
    let action = action.trim();
    if let Some((method, path)) = action.split_once(' ')
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && path.starts_with('/')
    {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let mut class = method.to_string();
        let segments = path.split('/').filter(|s| !s.is_empty()).take(2);
        let mut any = false;
        for s in segments {
            class.push('/');
            class.push_str(if is_id(s) { "{id}" } else { s });
            any = true;
        }
        if !any {
            class.push('/');
        }
        return class.replacen('/', " /", 1);
    }
    if let Some((service, op)) = action.split_once(':') {
        let verb: String = op
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .enumerate()
            .take_while(|(i, c)| *i == 0 || !c.is_ascii_uppercase())
            .map(|(_, c)| c)
            .collect();
        return format!("{service}:{verb}");
    }
    action.to_ascii_lowercase()
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
    }
}
