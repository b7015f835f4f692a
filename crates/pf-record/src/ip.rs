//! Client addresses as the logs write them.

use std::net::IpAddr;

/// An address as logged: IPv6 with or without `[...]` or `IPv6:`, and
/// IPv4-mapped IPv6 (`::ffff:127.0.0.1`) as the IPv4 address it is.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_start_matches("IPv6:");
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_forms_parse_to_the_same_address() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        for s in [
            "127.0.0.1",
            " 127.0.0.1 ",
            "::ffff:127.0.0.1",
            "[::ffff:127.0.0.1]",
        ] {
            assert_eq!(parse_ip(s), Some(v4), "{s}");
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(parse_ip("IPv6:2001:db8::1"), Some(v6));
        assert_eq!(parse_ip("[2001:db8::1]"), Some(v6));
        assert_eq!(parse_ip("unknown"), None);
        assert_eq!(parse_ip("10.0.0/8"), None);
    }
}
