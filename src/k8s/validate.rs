//! Checks for the values the injector takes from annotations and its settings, with the rules
//! the API server applies, so a pod is never patched into one the API server would refuse.

/// A value the API server would refuse, quoted in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error(
        "{0:?} is not a port name (1-15 of a-z, 0-9, '-', with a letter, no leading, trailing or double '-')"
    )]
    PortName(String),
    #[error("{0:?} is not an object name (a DNS subdomain such as mcp-sentinel-config)")]
    ObjectName(String),
    #[error("{0:?} is not an absolute path such as /mcp")]
    HttpPath(String),
    #[error("{0:?} is not a quantity such as 100m, 0.5 or 128Mi")]
    Quantity(String),
    #[error("{0:?} is not a port number (1-65535)")]
    PortNumber(String),
    #[error(
        "{0:?} is not a socket path such as /var/run/mcp/mcp.sock (absolute, in a directory other than /, no empty, '.' or '..' segments, no ':', at most 107 bytes)"
    )]
    SocketPath(String),
    #[error(
        "{0:?} is not an environment variable name (letters, digits and '_', not starting with a digit)"
    )]
    EnvName(String),
}

/// A Unix socket's path, for a `unix:<path>:<mcp path>` upstream and an emptyDir mounted at its
/// directory, which is returned: absolute, normalised, no `:` (the URL's separator), within
/// `sun_path` (108 bytes with the NUL), and not directly in `/` (nothing mounts there).
pub fn socket_path(s: &str) -> Result<&str, Invalid> {
    let bad = || Invalid::SocketPath(s.to_string());
    let rest = s.strip_prefix('/').ok_or_else(bad)?;
    let segments_ok = rest
        .split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    let chars_ok = s
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b':' | b'"' | b'\\'));
    if !segments_ok || !chars_ok || s.len() > 107 {
        return Err(bad());
    }
    match s.rfind('/') {
        Some(i) if i > 0 => Ok(&s[..i]),
        _ => Err(bad()),
    }
}

/// An environment variable name the way shells write them: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn env_name(s: &str) -> Result<(), Invalid> {
    let ok = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Invalid::EnvName(s.to_string()))
    }
}

/// A TCP port number, 1-65535, written in decimal digits only.
pub fn port_number(s: &str) -> Result<u16, Invalid> {
    s.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| s.parse::<u16>().ok())
        .flatten()
        .filter(|n| *n > 0)
        .ok_or_else(|| Invalid::PortNumber(s.to_string()))
}

/// A container port name (IANA_SVC_NAME): 1–15 characters of `a-z`, `0-9` and `-`, at least
/// one letter, no leading, trailing or doubled `-`.
pub fn port_name(s: &str) -> Result<(), Invalid> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(Invalid::PortName(s.to_string()))
    }
}

/// A ConfigMap or Secret name (DNS subdomain): up to 253 characters of `a-z`, `0-9`, `-` and
/// `.`, starting and ending with a letter or digit.
pub fn object_name(s: &str) -> Result<(), Invalid> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| alnum(b) || b == b'-' || b == b'.')
        && s.bytes().next().is_some_and(alnum)
        && s.bytes().last().is_some_and(alnum);
    if ok {
        Ok(())
    } else {
        Err(Invalid::ObjectName(s.to_string()))
    }
}

/// An absolute HTTP path without query or fragment.
pub fn http_path(s: &str) -> Result<(), Invalid> {
    let ok = s.starts_with('/')
        && s.len() <= 1024
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#' && b != b'"' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(Invalid::HttpPath(s.to_string()))
    }
}

/// A Kubernetes resource quantity (`100m`, `0.5`, `128Mi`, `1e3`, `2G`) as a number, for
/// comparing a request with its limit. Negative quantities are refused: no resource takes one.
pub fn quantity(s: &str) -> Result<f64, Invalid> {
    let bad = || Invalid::Quantity(s.to_string());
    let body = s.strip_prefix('+').unwrap_or(s);
    let end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(end);
    let digits = number.replace('.', "");
    if digits.is_empty() || number.matches('.').count() > 1 {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e = &exp[1..];
            let e = e.strip_prefix('+').unwrap_or(e);
            let (neg, digits) = match e.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, e),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let n: i32 = digits.parse().map_err(|_| bad())?;
            10f64.powi(if neg { -n } else { n })
        }
        _ => return Err(bad()),
    };
    let v = value * scale;
    if v.is_finite() { Ok(v) } else { Err(bad()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths() {
        assert_eq!(socket_path("/var/run/mcp/mcp.sock"), Ok("/var/run/mcp"));
        assert_eq!(socket_path("/run/s"), Ok("/run"));
        let long = format!("/run/{}", "a".repeat(102));
        assert_eq!(socket_path(&long), Ok("/run"));
        for bad in [
            "mcp.sock",
            "/mcp.sock",
            "/",
            "/run/",
            "/run//s.sock",
            "/run/./s.sock",
            "/run/../s.sock",
            "/run/a:b.sock",
            "/run/a b.sock",
            &format!("/run/{}", "a".repeat(103)),
        ] {
            assert_eq!(
                socket_path(bad),
                Err(Invalid::SocketPath(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn env_names() {
        for ok in ["MCP_SOCKET", "_x", "a1"] {
            assert_eq!(env_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1X", "MCP-SOCKET", "A B", "Ä"] {
            assert_eq!(env_name(bad), Err(Invalid::EnvName(bad.into())), "{bad}");
        }
    }

    #[test]
    fn port_numbers() {
        assert_eq!(port_number("9480"), Ok(9480));
        assert_eq!(port_number("1"), Ok(1));
        assert_eq!(port_number("65535"), Ok(65535));
        for bad in ["0", "65536", "", "+80", "-1", " 80", "80a", "0x50", "http"] {
            assert_eq!(
                port_number(bad),
                Err(Invalid::PortNumber(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn port_names() {
        for ok in [
            "http",
            "mcp",
            "http-2",
            "a1",
            "sentinel-admin",
            "abcdefghijklmno",
        ] {
            assert!(port_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "HTTP",
            "8080",
            "-http",
            "http-",
            "ht--tp",
            "abcdefghijklmnop",
            "h_t",
            "h t",
        ] {
            assert!(port_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_names() {
        assert!(object_name("mcp-sentinel-config").is_ok());
        assert!(object_name("a.b-c").is_ok());
        for bad in ["", "Config", "-a", "a-", "a_b", &"a".repeat(254)] {
            assert!(object_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert!(http_path("/mcp").is_ok());
        assert!(http_path("/api/v1/mcp").is_ok());
        for bad in ["mcp", "/mcp?x=1", "/a b", "/a#b", "", "/\"x"] {
            assert!(http_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities() {
        let cases: [(&str, f64); 9] = [
            ("100m", 0.1),
            ("1", 1.0),
            ("0.5", 0.5),
            (".5", 0.5),
            ("128Mi", 134_217_728.0),
            ("2G", 2e9),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("+2Ki", 2048.0),
        ];
        for (s, v) in cases {
            let got = quantity(s).unwrap();
            assert!((got - v).abs() < 1e-9 * v.max(1.0), "{s}: {got} != {v}");
        }
        for bad in [
            "", "m", "-1", "1.2.3", "12mb", "1e", "1e+", "Mi", "1 Mi", "abc",
        ] {
            assert!(quantity(bad).is_err(), "{bad}");
        }
    }
}
