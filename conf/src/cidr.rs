//! An address with its prefix length: the VIP, a node's address on a link, a network let in.

use std::net::IpAddr;

/// An address with its prefix length, such as `203.0.113.1/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Like `parse`, but the `/prefix` must be written: an installer answer without one would
    /// silently become a host route.
    pub fn with_prefix(s: &str) -> Result<Self, String> {
        if !s.contains('/') {
            return Err(format!("`{s}` has no /prefix"));
        }
        s.parse()
    }

    /// Whether `ip` lies in this address's subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }

    /// The IPv4 broadcast address of this subnet.
    pub fn broadcast(&self) -> Option<std::net::Ipv4Addr> {
        match self.addr {
            IpAddr::V4(a) => {
                let host = u32::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
                Some((u32::from(a) | host).into())
            }
            IpAddr::V6(_) => None,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `ADDRESS/PREFIX`, or a bare address meaning the host alone (/32, /128).
impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("`/{p}` is not a prefix length for {addr} (0 to {max})")),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_contained_and_broadcast() {
        // Address and prefix, or the error message.
        type Want = Result<(&'static str, u8), &'static str>;
        let cases: [(&str, Want); 6] = [
            ("198.51.100.11/24", Ok(("198.51.100.11", 24))),
            ("2001:db8::1", Ok(("2001:db8::1", 128))),
            ("198.51.100.1", Ok(("198.51.100.1", 32))),
            ("198.51.100.1/33", Err("`/33` is not a prefix length for 198.51.100.1 (0 to 32)")),
            ("nowhere/24", Err("`nowhere` is not an IP address")),
            ("0.0.0.0/0", Ok(("0.0.0.0", 0))),
        ];
        for (text, want) in cases {
            let got = text.parse::<Cidr>().map(|c| (c.addr.to_string(), c.prefix));
            assert_eq!(got, want.map(|(a, p)| (a.to_string(), p)).map_err(str::to_string), "{text}");
        }
        let net: Cidr = "198.51.100.11/24".parse().unwrap();
        assert!(net.contains("198.51.100.200".parse().unwrap()) && !net.contains("203.0.113.1".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("203.0.113.9".parse().unwrap()));
        assert_eq!(net.broadcast(), Some("198.51.100.255".parse().unwrap()));
        assert_eq!("198.51.100.1".parse::<Cidr>().unwrap().broadcast(), Some("198.51.100.1".parse().unwrap()));
        assert_eq!(Cidr::with_prefix("198.51.100.1"), Err("`198.51.100.1` has no /prefix".to_string()));
        assert_eq!(Cidr::with_prefix("198.51.100.11/24"), Ok(net));
    }
}
