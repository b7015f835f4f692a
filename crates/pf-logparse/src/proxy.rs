//! Which forwarded client addresses to believe.
//!
//! Roundcube logs the address it was connected from and, behind a reverse
//! proxy, the `X-Forwarded-For` / `X-Real-IP` headers it received. Anyone
//! who talks to Roundcube directly can write any address there, so the
//! headers are believed only when the direct peer is a proxy the admin
//! trusts (as nginx's `set_real_ip_from` and Roundcube's `proxy_whitelist`
//! do); otherwise the peer is the client and the claim is kept, flagged.

use pf_record::ip::parse_ip;
use std::net::IpAddr;
use std::str::FromStr;

/// An address block such as `10.0.0.0/8`, `2001:db8::/32` or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let base = parse_ip(addr).ok_or_else(|| {
            format!("{s:?} is not an address or address block (e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32)")
        })?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { base, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip) {
            (IpAddr::V4(b), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(b) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(b), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(b) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The proxies whose forwarded headers are believed (`parse.trusted_proxies`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

/// `parse.trusted_proxies`' default: a proxy on the same machine.
const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1"];

impl Default for TrustedProxies {
    fn default() -> Self {
        TrustedProxies::parse(LOOPBACK).unwrap_or(TrustedProxies(Vec::new()))
    }
}

/// Who the client is, from the peer and the headers it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client<'a> {
    /// No header, or one naming the peer itself.
    Direct,
    /// The peer is a trusted proxy; this is the client it forwarded for.
    Forwarded(&'a str),
    /// The peer is not trusted: its header claims this address.
    Untrusted(&'a str),
}

impl TrustedProxies {
    /// Every entry must parse; the error names the one that does not.
    pub fn parse<'s>(entries: impl IntoIterator<Item = &'s str>) -> Result<Self, String> {
        entries
            .into_iter()
            .map(Cidr::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client behind `peer`: with `X-Forwarded-For`, the nearest
    /// address that is not a trusted proxy, walking from the right (each
    /// proxy appends the address it was connected from, so only the right
    /// end is vouched for), else the leftmost; without it, `X-Real-IP`.
    pub fn client<'a>(
        &self,
        peer: &str,
        forwarded_for: Option<&'a str>,
        real_ip: Option<&'a str>,
    ) -> Client<'a> {
        let addresses = |list: Option<&'a str>| -> Vec<(&'a str, IpAddr)> {
            list.into_iter()
                .flat_map(|l| l.split(','))
                .map(str::trim)
                .filter_map(|a| parse_ip(a).map(|ip| (a, ip)))
                .collect()
        };
        let chain = addresses(forwarded_for);
        let real = addresses(real_ip);
        let Some(&claimed) = chain.first().or(real.first()) else {
            return Client::Direct;
        };
        let peer = parse_ip(peer);
        if !peer.is_some_and(|p| self.trusts(p)) {
            return if Some(claimed.1) == peer {
                Client::Direct
            } else {
                Client::Untrusted(claimed.0)
            };
        }
        let client = chain
            .iter()
            .rev()
            .find(|(_, ip)| !self.trusts(*ip))
            .or(chain.first())
            .unwrap_or(&claimed);
        if Some(client.1) == peer {
            Client::Direct
        } else {
            Client::Forwarded(client.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_contain_their_addresses() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.200.1.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!c.contains("2001:db9::5".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        for bad in ["10.0.0/8", "10.0.0.0/33", "::1/129", "proxy.example", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_are_believed_only_from_trusted_peers() {
        let t = TrustedProxies::parse(["127.0.0.1", "10.0.0.0/8"]).unwrap();
        let xff = Some("198.51.100.23, 10.0.0.5");
        assert_eq!(
            t.client("10.0.0.5", xff, None),
            Client::Forwarded("198.51.100.23")
        );
        // A forged left end behind a trusted proxy: the proxy vouches for the right end only.
        assert_eq!(
            t.client("127.0.0.1", Some("192.0.2.66, 203.0.113.40"), None),
            Client::Forwarded("203.0.113.40")
        );
        // Every hop trusted: the leftmost is the client.
        assert_eq!(
            t.client("127.0.0.1", Some("10.1.1.1, 10.2.2.2"), None),
            Client::Forwarded("10.1.1.1")
        );
        assert_eq!(
            t.client("127.0.0.1", None, Some("203.0.113.9")),
            Client::Forwarded("203.0.113.9")
        );
        // Straight from the Internet: the header is only a claim.
        assert_eq!(
            t.client("203.0.113.50", Some("192.0.2.1"), None),
            Client::Untrusted("192.0.2.1")
        );
        assert_eq!(
            t.client("203.0.113.50", None, Some("192.0.2.1")),
            Client::Untrusted("192.0.2.1")
        );
        assert_eq!(t.client("203.0.113.50", None, None), Client::Direct);
        assert_eq!(
            t.client("203.0.113.50", Some("garbage"), None),
            Client::Direct
        );
        assert_eq!(
            t.client("::ffff:127.0.0.1", Some("203.0.113.9"), None),
            Client::Forwarded("203.0.113.9")
        );
        // Loopback only by default.
        let d = TrustedProxies::default();
        assert_eq!(
            d.client("::1", Some("203.0.113.9"), None),
            Client::Forwarded("203.0.113.9")
        );
        assert_eq!(
            d.client("10.0.0.5", xff, None),
            Client::Untrusted("198.51.100.23")
        );
    }
}
