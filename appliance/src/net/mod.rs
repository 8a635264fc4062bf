//! Low-level networking for the `vip` resource and the connectivity monitor.
//!
//! Parts: [`netlink`] (interface lookup and address add/remove over rtnetlink), [`arp`]
//! (Ethernet/ARP frames, gratuitous ARP and the RFC 5227 conflict probe over an AF_PACKET
//! socket), [`ndp`] (IPv6 unsolicited neighbour advertisements and the duplicate address
//! detection probe) and [`nonlocal`] (`net.ipv4.ip_nonlocal_bind`).
//!
//! Every socket here is opened in the network namespace of the calling thread, which is what
//! lets the tests run the real code inside namespaces they create.

pub mod arp;
pub mod ndp;
pub mod netlink;
pub mod nonlocal;

/// An Ethernet hardware address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    pub const ZERO: Mac = Mac([0; 6]);
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl std::str::FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(|| format!("`{s}` is not a MAC address"))?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| format!("`{s}` is not a MAC address"))?;
        }
        if parts.next().is_some() {
            return Err(format!("`{s}` is not a MAC address"));
        }
        Ok(Mac(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_text() {
        let mac: Mac = "02:00:5e:10:0a:ff".parse().unwrap();
        assert_eq!(mac, Mac([0x02, 0x00, 0x5e, 0x10, 0x0a, 0xff]));
        assert_eq!(mac.to_string(), "02:00:5e:10:0a:ff");
        assert!("02:00:5e:10:0a".parse::<Mac>().is_err());
        assert!("02:00:5e:10:0a:ff:01".parse::<Mac>().is_err());
        assert!("02:00:5e:10:0a:zz".parse::<Mac>().is_err());
    }
}
