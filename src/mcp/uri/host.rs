//! The authority of a canonical URI: host lower-cased without a trailing dot, IPv4 in dotted
//! decimal whichever notation WHATWG parsers accept, IPv6 compressed, every spelling of this
//! machine as `localhost`, default ports dropped. User information is refused.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Canon, UriError, is_unreserved};

/// Writes the canonical form of `authority` (what follows `//`, up to the path).
pub(super) fn authority(
    canon: &mut Canon<'_>,
    authority: &str,
    default_port: Option<u16>,
) -> Result<(), UriError> {
    if canon.pattern && authority.contains(['{', '*', '?']) {
        return glob_host(canon, authority);
    }
    // A server that ignores `user@` reads the same resource as without it, so `db://u@h/x`
    // would escape a rule on `db://h/x`; WHATWG and Python also disagree on `a@b@c`.
    if authority.contains('@') {
        return Err(UriError::Userinfo);
    }
    if authority.is_empty() {
        // `scheme:///path`: an empty authority is legal.
        return Ok(());
    }
    let (host, port) = split_port(authority)?;
    let host = canonical_host(host)?;
    canon.out.push_str(&host);
    let Some(port) = port.filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::BadPort);
    }
    let digits = port.trim_start_matches('0');
    let n: u16 = match digits {
        "" => 0,
        d if d.len() <= 5 => d.parse().map_err(|_| UriError::BadPort)?,
        _ => return Err(UriError::BadPort),
    };
    if Some(n) != default_port {
        // Leading zeros dropped: WHATWG and Python read the port as a number.
        canon.out.push_str(":");
        canon.out.push_str(&n.to_string());
    }
    Ok(())
}

/// A `file` URI's authority names this machine (no port, no user information).
pub(super) fn is_this_machine(authority: &str) -> bool {
    !authority.contains('@')
        && matches!(split_port(authority), Ok((host, None)) if canonical_host(host).is_ok_and(|h| h == "localhost"))
}

/// A pattern's host with a glob or a template: only lower-cased.
fn glob_host(canon: &mut Canon<'_>, authority: &str) -> Result<(), UriError> {
    let mut in_expr = false;
    for c in authority.chars() {
        match c {
            '{' => in_expr = true,
            '}' => in_expr = false,
            _ if in_expr => {}
            c if c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:?[]".contains(c) => {}
            c if !c.is_ascii() => return Err(UriError::NonAsciiHost),
            '@' => return Err(UriError::Userinfo),
            _ => return Err(UriError::BadHost),
        }
        canon
            .out
            .push(if in_expr { c } else { c.to_ascii_lowercase() });
    }
    Ok(())
}

/// `host[:port]` or `[v6][:port]`.
fn split_port(authority: &str) -> Result<(&str, Option<&str>), UriError> {
    if authority.starts_with('[') {
        let end = authority.find(']').ok_or(UriError::BadHost)? + 1;
        let (host, after) = authority.split_at(end);
        return match after {
            "" => Ok((host, None)),
            a => a
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or(UriError::BadHost),
        };
    }
    Ok(match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    })
}

fn canonical_host(host: &str) -> Result<Cow<'_, str>, UriError> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(UriError::BadHost)?;
        return ipv6(inner).map(Cow::Owned);
    }
    if host.is_empty() {
        return Err(UriError::BadHost);
    }
    // Hot path: a plain lower-case name.
    let plain = host
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !host.starts_with('.')
        && !host.ends_with('.')
        && !host.contains("..")
        && !ends_in_number(host)
        && !host.ends_with(".localhost");
    if plain {
        return Ok(Cow::Borrowed(host));
    }
    let mut name = String::with_capacity(host.len());
    for c in host.chars() {
        match c {
            // WHATWG parsers decode escapes in a host, Python's urlsplit and the resolver do
            // not: `h%41` is `ha` to one and a failed lookup to the other.
            '%' => return Err(UriError::BadHost),
            c if !c.is_ascii() => return Err(UriError::NonAsciiHost),
            c if is_unreserved(c as u8) || "!$&'()*+,;=".contains(c) => {
                name.push(c.to_ascii_lowercase());
            }
            _ => return Err(UriError::BadHost),
        }
    }
    if name.ends_with('.') {
        name.pop();
    }
    // One trailing dot names the same host (an FQDN); an empty label anywhere else does not.
    if name.split('.').any(str::is_empty) {
        return Err(UriError::BadHost);
    }
    if ends_in_number(&name) {
        return ipv4(&name).map(|a| Cow::Owned(ipv4_host(a)));
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Ok(Cow::Borrowed("localhost"));
    }
    Ok(Cow::Owned(name))
}

fn ipv4_host(a: Ipv4Addr) -> String {
    // Linux connects to 0.0.0.0 as to 127.0.0.1.
    if a.is_loopback() || a.is_unspecified() {
        "localhost".into()
    } else {
        a.to_string()
    }
}

fn ipv6(inner: &str) -> Result<String, UriError> {
    // Zone ids (`%25eth0`) and IPvFuture are read differently by every parser.
    let a: Ipv6Addr = inner.parse().map_err(|_| UriError::BadHost)?;
    if a.is_loopback() || a.is_unspecified() {
        return Ok("localhost".into());
    }
    // A dual-stack socket reaches `::ffff:a.b.c.d` at `a.b.c.d`.
    if let Some(v4) = a.to_ipv4_mapped() {
        return Ok(ipv4_host(v4));
    }
    Ok(format!("[{a}]"))
}

/// WHATWG's "ends in a number": such a host is an IPv4 address or invalid.
fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    last.strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// WHATWG's IPv4 parser (glibc's `inet_aton` reads the same notations): one to four parts,
/// each decimal, octal (`0` prefix) or hex (`0x`), the last filling the remaining bytes.
fn ipv4(host: &str) -> Result<Ipv4Addr, UriError> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return Err(UriError::BadHost);
    }
    let mut addr: u64 = 0;
    for (i, part) in parts.iter().enumerate() {
        let n = ipv4_number(part)?;
        if i + 1 < parts.len() {
            if n > 255 {
                return Err(UriError::BadHost);
            }
            addr |= n << (8 * (3 - i));
        } else {
            if n >= 1 << (8 * (5 - parts.len())) {
                return Err(UriError::BadHost);
            }
            addr |= n;
        }
    }
    Ok(Ipv4Addr::from(
        u32::try_from(addr).map_err(|_| UriError::BadHost)?,
    ))
}

fn ipv4_number(part: &str) -> Result<u64, UriError> {
    let (digits, radix) =
        if let Some(h) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (h, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if part.is_empty() {
        return Err(UriError::BadHost);
    }
    let mut n: u64 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix).ok_or(UriError::BadHost)?;
        n = n * u64::from(radix) + u64::from(d);
        if n > u64::from(u32::MAX) {
            return Err(UriError::BadHost);
        }
    }
    Ok(n)
}
