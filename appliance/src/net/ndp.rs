//! IPv6's gratuitous ARP: an unsolicited neighbour advertisement (RFC 4861 §7.2.6) for the
//! VIP, sent to all nodes with the override flag so neighbours replace the old holder's
//! link-layer address.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::net::Mac;

/// ICMPv6 type of a neighbour advertisement (RFC 4861 §4.4).
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// RFC 4861 §4.4: the O flag, "override an existing cache entry".
const FLAG_OVERRIDE: u8 = 0x20;
/// RFC 4861 §4.6.1: option 2, target link-layer address.
const OPT_TARGET_LL_ADDR: u8 = 2;
/// RFC 4861 §7.1.2: receivers drop neighbour discovery with any other hop limit.
const HOP_LIMIT: u32 = 255;
/// ICMPv6 header (4) + flags/reserved (4) + target (16) + option (8).
pub const NA_LEN: usize = 32;

/// The ICMPv6 message of an unsolicited advertisement of `target` at `mac`. The checksum is
/// left zero: the kernel computes it for ICMPv6 raw sockets (RFC 3542 §3.1), since it covers
/// the source address the kernel picks.
pub fn unsolicited_na(target: Ipv6Addr, mac: Mac) -> [u8; NA_LEN] {
    let mut m = [0u8; NA_LEN];
    m[0] = NEIGHBOR_ADVERTISEMENT;
    m[4] = FLAG_OVERRIDE;
    m[8..24].copy_from_slice(&target.octets());
    m[24] = OPT_TARGET_LL_ADDR;
    m[25] = 1; // option length in units of 8 bytes
    m[26..32].copy_from_slice(&mac.0);
    m
}

/// A raw ICMPv6 socket that sends advertisements for one VIP out of one interface.
pub struct NaSocket {
    socket: Socket,
    ifindex: u32,
    message: [u8; NA_LEN],
}

impl NaSocket {
    /// Opens the socket in the calling thread's network namespace. `target` must already be
    /// on the interface and usable (added without DAD): it is the packets' source address,
    /// so that the advertisement does not depend on a link-local address having finished
    /// its own duplicate address detection.
    pub fn open(ifindex: u32, target: Ipv6Addr, mac: Mac) -> io::Result<Self> {
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        socket.set_multicast_hops_v6(HOP_LIMIT)?;
        socket.set_multicast_if_v6(ifindex)?;
        socket.bind(&SockAddr::from(SocketAddrV6::new(target, 0, 0, 0)))?;
        Ok(NaSocket {
            socket,
            ifindex,
            message: unsolicited_na(target, mac),
        })
    }

    /// Sends one advertisement to ff02::1 on the interface.
    pub fn send(&self) -> io::Result<()> {
        let all_nodes = SocketAddrV6::new(
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
            0,
            0,
            self.ifindex,
        );
        self.socket
            .send_to(&self.message, &SockAddr::from(all_nodes))
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_is_byte_exact() {
        let target: Ipv6Addr = "2001:db8::50".parse().unwrap();
        let na = unsolicited_na(target, Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]));
        #[rustfmt::skip]
        let expected: [u8; NA_LEN] = [
            136, 0, 0, 0,                                 // type, code, checksum (kernel)
            0x20, 0, 0, 0,                                // O flag only: not a router, unsolicited
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,           // target 2001:db8::50
            0, 0, 0, 0, 0, 0, 0, 0x50,
            2, 1, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55,     // target link-layer address option
        ];
        assert_eq!(na, expected);
    }
}
