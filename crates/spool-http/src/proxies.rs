//! The client's address behind reverse proxies (`trusted_proxies`).
//!
//! Login throttling counts failures per client address. Behind a load balancer every request
//! comes from the balancer, so one attacker would lock a user out for everyone behind it, and
//! throttling would be useless. With the balancers' addresses listed in `trusted_proxies`, a
//! request whose peer is one of them is attributed to the address its `X-Forwarded-For` names:
//! read from the right, the first entry that is not itself a trusted proxy (each proxy appends
//! the address it saw, so entries left of that one are the client's to forge and never used).
//! A request from any other peer is attributed to the peer, whatever headers it sends, so a
//! client cannot pick its own address. Empty (the default): the peer, always.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// Networks whose requests carry a trustworthy `X-Forwarded-For`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
}

/// IPv4 addresses seen as IPv6 (`::ffff:a.b.c.d`, what a dual-stack listener reports) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl TrustedProxies {
    /// Parses addresses (`10.0.0.5`, `::1`) and networks (`10.0.0.0/8`, `fd00::/8`).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in entries {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (addr, len) = match entry.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (entry, None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| {
                format!("trusted_proxies entry {entry:?} is not an IP address or network")
            })?;
            let ip = canonical(ip);
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                None => max,
                Some(l) => l.parse::<u8>().ok().filter(|&l| l <= max).ok_or_else(|| {
                    format!("trusted_proxies entry {entry:?} has an invalid prefix length")
                })?,
            };
            nets.push((ip, len));
        }
        Ok(Self { nets })
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|&(net, len)| {
            if net.is_ipv4() != ip.is_ipv4() {
                return false;
            }
            let width = if ip.is_ipv4() { 32 } else { 128 };
            if len == 0 {
                return true;
            }
            let shift = width - u32::from(len);
            bits(net) >> shift == bits(ip) >> shift
        })
    }

    /// The address a request from `peer` with `headers` is attributed to.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                // A malformed entry: nothing left of it can be trusted.
                return client;
            };
            client = canonical(ip);
            if !self.contains(client) {
                return client;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>())
            .expect("valid")
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("header"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn networks_match_by_prefix_and_v4_mapped_addresses_are_v4() {
        let p = proxies(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]);
        assert!(p.contains(ip("10.200.3.4")));
        assert!(!p.contains(ip("11.0.0.1")));
        assert!(p.contains(ip("192.168.1.7")));
        assert!(!p.contains(ip("192.168.1.8")));
        assert!(p.contains(ip("fd12::1")));
        assert!(p.contains(ip("::ffff:10.1.1.1")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.1/x"] {
            assert!(TrustedProxies::parse(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_and_only_behind_a_trusted_peer() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        // Through the balancer: the address it appended.
        assert_eq!(
            p.client(ip("127.0.0.1"), &xff(&["203.0.113.9"])),
            ip("203.0.113.9")
        );
        // A forged entry left of the real one is ignored; inner proxies are skipped.
        assert_eq!(
            p.client(ip("127.0.0.1"), &xff(&["1.2.3.4, 203.0.113.9", "10.1.2.3"])),
            ip("203.0.113.9")
        );
        // Straight from a client: its own address, whatever it claims.
        assert_eq!(
            p.client(ip("198.51.100.1"), &xff(&["1.2.3.4"])),
            ip("198.51.100.1")
        );
        // No header, or garbage: the proxy itself (the last trustworthy hop).
        assert_eq!(
            p.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        assert_eq!(p.client(ip("127.0.0.1"), &xff(&["junk"])), ip("127.0.0.1"));
        // Nothing trusted: headers never matter.
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &xff(&["1.2.3.4"])),
            ip("127.0.0.1")
        );
    }
}
