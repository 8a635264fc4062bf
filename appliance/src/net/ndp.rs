//! IPv6's gratuitous ARP and ARP probe. An unsolicited neighbour advertisement (RFC 4861
//! §7.2.6) for the VIP, sent to all nodes with the override flag so neighbours replace the
//! old holder's link-layer address; and the split-brain guard's duplicate address detection
//! probe (RFC 4862 §5.4), a neighbour solicitation from `::` that a holder of the address
//! must answer.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::net::arp::{self, ArpSocket};
use crate::net::Mac;

/// ICMPv6 type of a neighbour solicitation (RFC 4861 §4.3).
const NEIGHBOR_SOLICITATION: u8 = 135;
/// ICMPv6 type of a neighbour advertisement (RFC 4861 §4.4).
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// RFC 2464 §3.
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IPv6 next header of ICMPv6 (RFC 4443 §1).
const NEXT_HEADER_ICMPV6: u8 = 58;
/// Ethernet header (14) + IPv6 header (40).
const ICMP_AT: usize = 54;
/// Ethernet (14) + IPv6 (40) + a solicitation without options (24).
pub const DAD_FRAME_LEN: usize = 78;
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

/// The solicited-node multicast address of `addr`: ff02::1:ff00:0/104 with its low 24 bits
/// (RFC 4291 §2.7.1). A holder of `addr` listens on it.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]])
}

/// The Ethernet address of an IPv6 multicast group: 33:33 and its low 32 bits (RFC 2464 §7).
pub fn multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The ICMPv6 checksum of `message` (its checksum field zero) sent from `src` to `dst`:
/// the ones' complement sum over the IPv6 pseudo-header and the message (RFC 4443 §2.3,
/// RFC 8200 §8.1).
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut pseudo = Vec::with_capacity(40 + message.len() + 1);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
    pseudo.extend_from_slice(message);
    if pseudo.len() % 2 == 1 {
        pseudo.push(0);
    }
    let mut sum: u32 = pseudo.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The duplicate address detection probe for `target` as a whole Ethernet frame from `own`:
/// a neighbour solicitation from the unspecified address to the target's solicited-node
/// group, hop limit 255, without a source link-layer address option, which RFC 4861 §4.3
/// forbids with an unspecified source (RFC 4862 §5.4.2). Built by hand because a raw ICMPv6
/// socket would give it a link-local source, and then neighbours would learn from it.
pub fn dad_probe(own: Mac, target: Ipv6Addr) -> [u8; DAD_FRAME_LEN] {
    let group = solicited_node(target);
    let mut f = [0u8; DAD_FRAME_LEN];
    f[0..6].copy_from_slice(&multicast_mac(group).0);
    f[6..12].copy_from_slice(&own.0);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    f[14] = 0x60; // version 6, traffic class and flow label 0
    f[18..20].copy_from_slice(&24u16.to_be_bytes()); // payload length
    f[20] = NEXT_HEADER_ICMPV6;
    f[21] = 255; // hop limit
                 // Source :: (bytes 22..38 stay zero).
    f[38..54].copy_from_slice(&group.octets());
    f[ICMP_AT] = NEIGHBOR_SOLICITATION;
    f[ICMP_AT + 8..ICMP_AT + 24].copy_from_slice(&target.octets());
    let sum = icmpv6_checksum(Ipv6Addr::UNSPECIFIED, group, &f[ICMP_AT..]);
    f[ICMP_AT + 2..ICMP_AT + 4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The host `frame` shows holding `target`: a valid neighbour advertisement for it (hop
/// limit 255, RFC 4861 §7.1.2) from a hardware address other than `own`. A holder answers a
/// DAD probe with one, to all nodes (RFC 4861 §7.2.4). Its target link-layer address option
/// names the holder; the Ethernet source does when it has none. Anything else — another
/// host's own DAD probe for the address included — is no holder.
pub fn advertised_holder(frame: &[u8], target: Ipv6Addr, own: Mac) -> Option<Mac> {
    let f = frame.get(..ICMP_AT + 24)?;
    let valid = u16::from_be_bytes([f[12], f[13]]) == ETHERTYPE_IPV6
        && f[14] >> 4 == 6
        && f[20] == NEXT_HEADER_ICMPV6
        && f[21] == 255
        && f[ICMP_AT] == NEIGHBOR_ADVERTISEMENT
        && f[ICMP_AT + 1] == 0
        && f[ICMP_AT + 8..ICMP_AT + 24] == target.octets();
    if !valid {
        return None;
    }
    let payload = usize::from(u16::from_be_bytes([f[18], f[19]]));
    let icmp = frame.get(ICMP_AT..ICMP_AT + payload)?;
    let mut options = icmp.get(24..)?;
    let mut holder = Mac([f[6], f[7], f[8], f[9], f[10], f[11]]);
    while let [kind, len, ..] = *options {
        let len = usize::from(len) * 8;
        let Some(option) = options.get(..len).filter(|_| len > 0) else { break };
        if kind == OPT_TARGET_LL_ADDR && len == 8 {
            holder = Mac([option[2], option[3], option[4], option[5], option[6], option[7]]);
        }
        options = &options[len..];
    }
    (holder != own).then_some(holder)
}

/// Duplicate address detection for `vip` from interface `ifindex` (whose address is `own`):
/// the split-brain guard of an IPv6 VIP, with the ARP probe's timing ([`arp::probe`]).
/// RFC 4862 sends one probe and waits RetransTimer (1 s) for an answer; a holder on the
/// segment answers within milliseconds, and a failover cannot wait a second.
pub async fn dad(ifindex: u32, own: Mac, vip: Ipv6Addr, window: Duration) -> io::Result<Option<Mac>> {
    let socket = ArpSocket::open_ethertype(ifindex, ETHERTYPE_IPV6)?;
    let frame = dad_probe(own, vip);
    arp::probe_window(&socket, &frame, window, |received| advertised_holder(received, vip, own)).await
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
        Ok(NaSocket { socket, ifindex, message: unsolicited_na(target, mac) })
    }

    /// Sends one advertisement to ff02::1 on the interface.
    pub fn send(&self) -> io::Result<()> {
        let all_nodes = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0, 0, self.ifindex);
        self.socket.send_to(&self.message, &SockAddr::from(all_nodes)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: Mac = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
    const HOLDER: Mac = Mac([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);

    #[test]
    fn the_dad_probe_is_byte_exact() {
        let target: Ipv6Addr = "2001:db8::50".parse().unwrap();
        let frame = dad_probe(OWN, target);
        #[rustfmt::skip]
        let expected: [u8; DAD_FRAME_LEN] = [
            0x33, 0x33, 0xff, 0x00, 0x00, 0x50,           // Ethernet: solicited-node group
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55,           // Ethernet source
            0x86, 0xdd,                                   // IPv6
            0x60, 0, 0, 0, 0, 24, 58, 255,                // v6, payload 24, ICMPv6, hop limit 255
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,   // source ::
            0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0x00, 0x00, 0x50, // ff02::1:ff00:50
            135, 0, 0x4c, 0x4f,                           // NS, code 0, checksum
            0, 0, 0, 0,                                   // reserved
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,           // target 2001:db8::50
            0, 0, 0, 0, 0, 0, 0, 0x50,
        ];
        assert_eq!(frame, expected);
        // The checksum verifies: summed with it in place, the complement is zero.
        assert_eq!(icmpv6_checksum(Ipv6Addr::UNSPECIFIED, solicited_node(target), &frame[ICMP_AT..]), 0);
    }

    /// A neighbour advertisement as a holder sends it in answer to a DAD probe: to all
    /// nodes, S flag clear, O flag set, with its target link-layer address option.
    fn advertisement(from: Mac, target: Ipv6Addr, option: Option<Mac>, hop_limit: u8) -> Vec<u8> {
        let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
        f.extend_from_slice(&from.0);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        let icmp_len: u16 = if option.is_some() { 32 } else { 24 };
        f.extend_from_slice(&icmp_len.to_be_bytes());
        f.extend_from_slice(&[58, hop_limit]);
        f.extend_from_slice(&"fe80::aa:bbff:fecc:ddee".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets());
        f.extend_from_slice(&[NEIGHBOR_ADVERTISEMENT, 0, 0, 0, 0x20, 0, 0, 0]);
        f.extend_from_slice(&target.octets());
        if let Some(mac) = option {
            f.extend_from_slice(&[OPT_TARGET_LL_ADDR, 1]);
            f.extend_from_slice(&mac.0);
        }
        f
    }

    #[test]
    fn a_holder_is_an_advertisement_for_the_target_from_another_host() {
        let vip: Ipv6Addr = "2001:db8::50".parse().unwrap();
        let other: Ipv6Addr = "2001:db8::51".parse().unwrap();
        assert_eq!(advertised_holder(&advertisement(HOLDER, vip, Some(HOLDER), 255), vip, OWN), Some(HOLDER));
        // The option names the holder, whoever relayed the frame; without it, the sender.
        let relayed = advertisement(OWN, vip, Some(HOLDER), 255);
        assert_eq!(advertised_holder(&relayed, vip, OWN), Some(HOLDER));
        assert_eq!(advertised_holder(&advertisement(HOLDER, vip, None, 255), vip, OWN), Some(HOLDER));
        // Our own, another address, a forwarded (hop limit < 255) one: no holder.
        assert_eq!(advertised_holder(&advertisement(OWN, vip, Some(OWN), 255), vip, OWN), None);
        assert_eq!(advertised_holder(&advertisement(HOLDER, other, Some(HOLDER), 255), vip, OWN), None);
        assert_eq!(advertised_holder(&advertisement(HOLDER, vip, Some(HOLDER), 64), vip, OWN), None);
        // Another host probing for the same address is not holding it.
        assert_eq!(advertised_holder(&dad_probe(HOLDER, vip), vip, OWN), None);
        // Truncated, or a zero-length option: no panic, and the option is not believed.
        let full = advertisement(HOLDER, vip, Some(Mac([0x02, 0, 0, 0, 0, 1])), 255);
        assert_eq!(advertised_holder(&full[..60], vip, OWN), None);
        let mut zero = full.clone();
        zero[ICMP_AT + 25] = 0;
        assert_eq!(advertised_holder(&zero, vip, OWN), Some(HOLDER));
    }

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
