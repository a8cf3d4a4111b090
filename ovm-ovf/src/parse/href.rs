//! `ovf:href` policy: a descriptor must not make ovm read outside its package unless
//! the caller allows it.

use crate::error::{OvfError, Result};
use crate::limits::HrefPolicy;

/// Checks an `ovf:href` against the policy: URLs, absolute paths and `..` components are
/// refused unless allowed; NUL, backslashes and control characters always are.
pub fn check_href(href: &str, policy: HrefPolicy) -> Result<()> {
    let bad = |reason: &str| OvfError::BadHref {
        href: href.to_owned(),
        reason: reason.to_owned(),
    };
    if href.trim().is_empty() {
        return Err(bad("empty"));
    }
    let decoded = percent_decode(href).ok_or_else(|| bad("invalid percent-encoding"))?;
    if decoded.chars().any(|c| c.is_control()) || decoded.contains('\\') {
        return Err(bad("contains a control character or a backslash"));
    }
    if let Some((scheme, _)) = href.split_once(':')
        && !scheme.is_empty()
        && scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
    {
        if scheme.len() == 1 {
            if !policy.allow_absolute {
                return Err(bad("is an absolute (drive letter) path"));
            }
            return Ok(());
        }
        if !policy.allow_urls {
            return Err(bad(&format!(
                "is a URL ({scheme}:); only files inside the package are read"
            )));
        }
        return Ok(());
    }
    if decoded.starts_with('/') && !policy.allow_absolute {
        return Err(bad("is an absolute path"));
    }
    if decoded.split('/').any(|c| c == "..") && !policy.allow_parent {
        return Err(bad("contains a `..` component (escapes the package)"));
    }
    Ok(())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrefs() {
        let p = HrefPolicy::default();
        assert!(check_href("disk1.vmdk", p).is_ok());
        assert!(check_href("sub/disk1.vmdk", p).is_ok());
        for bad in [
            "../x.vmdk",
            "a/../../x",
            "/etc/passwd",
            "http://example.invalid/x.vmdk",
            "file:///etc/passwd",
            "C:\\x",
            "c:x",
            "%2e%2e/x",
            "a\\b",
            "",
        ] {
            assert!(
                matches!(check_href(bad, p), Err(OvfError::BadHref { .. })),
                "{bad}"
            );
        }
        let lax = HrefPolicy {
            allow_urls: true,
            allow_absolute: true,
            allow_parent: true,
        };
        assert!(check_href("../x.vmdk", lax).is_ok());
        assert!(check_href("http://h/x", lax).is_ok());
    }
}
