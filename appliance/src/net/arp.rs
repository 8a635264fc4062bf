//! ARP on the wire: the Ethernet+ARP frame (RFC 826) built and parsed by pure functions,
//! an AF_PACKET socket to send and receive it, gratuitous ARP announcements and the RFC 5227
//! conflict probe behind the VIP's split-brain guard.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::net::Mac;

/// Ethernet header (14) + ARP for Ethernet/IPv4 (28).
pub const FRAME_LEN: usize = 42;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;
const HTYPE_ETHERNET: u16 = 1;

/// RFC 826 `ar$op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Request,
    Reply,
}

impl Op {
    fn code(self) -> u16 {
        match self {
            Op::Request => 1,
            Op::Reply => 2,
        }
    }
}

/// The fields of an ARP packet for Ethernet/IPv4, plus the Ethernet destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub eth_dst: Mac,
    pub op: Op,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// A gratuitous ARP announcing that `ip` is at `mac`: a broadcast request whose sender and
    /// target IP are both `ip` (RFC 5227 §3 "ARP Announcement", what `arping -U` and
    /// Pacemaker's `send_arp` send). Linux neighbours update an existing entry on it.
    pub fn announcement(mac: Mac, ip: Ipv4Addr) -> Self {
        Arp {
            eth_dst: Mac::BROADCAST,
            op: Op::Request,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: Mac::ZERO,
            target_ip: ip,
        }
    }

    /// An RFC 5227 §2.1.1 ARP probe for `ip`: sender IP 0.0.0.0 so that no neighbour cache
    /// learns anything from it, while the holder of `ip` must answer.
    pub fn probe(mac: Mac, ip: Ipv4Addr) -> Self {
        Arp {
            eth_dst: Mac::BROADCAST,
            op: Op::Request,
            sender_mac: mac,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: Mac::ZERO,
            target_ip: ip,
        }
    }

    /// The frame as it goes on the wire (the driver pads it to the Ethernet minimum).
    pub fn to_frame(&self) -> [u8; FRAME_LEN] {
        let mut f = [0u8; FRAME_LEN];
        f[0..6].copy_from_slice(&self.eth_dst.0);
        f[6..12].copy_from_slice(&self.sender_mac.0);
        f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        f[14..16].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        f[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[18] = 6;
        f[19] = 4;
        f[20..22].copy_from_slice(&self.op.code().to_be_bytes());
        f[22..28].copy_from_slice(&self.sender_mac.0);
        f[28..32].copy_from_slice(&self.sender_ip.octets());
        f[32..38].copy_from_slice(&self.target_mac.0);
        f[38..42].copy_from_slice(&self.target_ip.octets());
        f
    }

    /// Parses an Ethernet frame; `None` for anything that is not ARP for Ethernet/IPv4.
    pub fn parse(frame: &[u8]) -> Option<Self> {
        let f = frame.get(..FRAME_LEN)?;
        let be16 = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
        let mac = |i: usize| Mac([f[i], f[i + 1], f[i + 2], f[i + 3], f[i + 4], f[i + 5]]);
        let ip = |i: usize| Ipv4Addr::new(f[i], f[i + 1], f[i + 2], f[i + 3]);
        if be16(12) != ETHERTYPE_ARP || be16(14) != HTYPE_ETHERNET || be16(16) != ETHERTYPE_IPV4 {
            return None;
        }
        if f[18] != 6 || f[19] != 4 {
            return None;
        }
        let op = match be16(20) {
            1 => Op::Request,
            2 => Op::Reply,
            _ => return None,
        };
        Some(Arp {
            eth_dst: mac(0),
            op,
            sender_mac: mac(22),
            sender_ip: ip(28),
            target_mac: mac(32),
            target_ip: ip(38),
        })
    }
}

/// Whether `arp` shows another host using `vip`: any ARP whose sender is `vip` from a
/// hardware address that is not ours (RFC 5227 §2.1.1). Returns that host's address.
pub fn conflicting_holder(arp: &Arp, vip: Ipv4Addr, own: Mac) -> Option<Mac> {
    (arp.sender_ip == vip && arp.sender_mac != own).then_some(arp.sender_mac)
}

/// A raw AF_PACKET socket bound to one interface that sends whole Ethernet frames and
/// receives the frames of one EtherType only (ARP here; IPv6 for the DAD probe in
/// [`crate::net::ndp`]).
pub struct ArpSocket {
    fd: AsyncFd<OwnedFd>,
}

impl ArpSocket {
    /// Opens the socket for ARP on interface `ifindex` of the calling thread's network
    /// namespace. Needs CAP_NET_RAW and a tokio runtime.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        Self::open_ethertype(ifindex, ETHERTYPE_ARP)
    }

    /// [`ArpSocket::open`] for frames of another EtherType.
    pub fn open_ethertype(ifindex: u32, ethertype: u16) -> io::Result<Self> {
        let protocol = ethertype.to_be();
        // Protocol 0 here and the real one in bind(2): a socket created with a protocol is
        // hooked on every interface first and re-hooked by bind, which waits for an RCU grace
        // period (synchronize_net, ~10 ms) — on the failover's critical path.
        // SAFETY: plain socket(2) call; the result is checked before it is wrapped.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value to start from.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
        // SAFETY: `addr` lives across the call and the length matches its type.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd keeps the descriptor open, unchanged, for as long as the AsyncFd
        // that owns it.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(ArpSocket { fd })
    }

    /// Sends one frame out of the bound interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer is valid for its length for the duration of the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives the next frame of the socket's EtherType into `buf`, returning its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|fd| {
                // SAFETY: the buffer is valid and writable for its length.
                let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            if let Ok(result) = result {
                return result;
            }
        }
    }

    /// Sends a gratuitous ARP for `ip` at `mac`.
    pub fn announce(&self, mac: Mac, ip: Ipv4Addr) -> io::Result<()> {
        self.send(&Arp::announcement(mac, ip).to_frame())
    }
}

/// How many probes the split-brain guard sends (RFC 5227 §1.1 PROBE_NUM).
pub const PROBE_COUNT: u32 = 3;

/// Probes `vip` from interface `ifindex` (whose address is `own`) and returns the hardware
/// address of a host that answers for it, if any. The probes are spread over the first two
/// thirds of `window`, and answers are awaited until it ends. RFC 5227 waits 1–2 s between
/// probes and 2 s after the last (PROBE_MIN/PROBE_MAX/ANNOUNCE_WAIT): made for DHCP clients,
/// far too slow for a failover where every second drops calls. A holder on the same segment
/// answers within milliseconds.
pub async fn probe(ifindex: u32, own: Mac, vip: Ipv4Addr, window: Duration) -> io::Result<Option<Mac>> {
    let socket = ArpSocket::open(ifindex)?;
    let frame = Arp::probe(own, vip).to_frame();
    probe_window(&socket, &frame, window, |received| {
        Arp::parse(received).and_then(|a| conflicting_holder(&a, vip, own))
    })
    .await
}

/// Sends `frame` [`PROBE_COUNT`] times spread over the first two thirds of `window` and
/// returns the first holder `holder` finds in a received frame, or `None` once `window`
/// has passed. Shared by the ARP probe and IPv6 duplicate address detection.
pub async fn probe_window(
    socket: &ArpSocket,
    frame: &[u8],
    window: Duration,
    holder: impl Fn(&[u8]) -> Option<Mac>,
) -> io::Result<Option<Mac>> {
    let start = Instant::now();
    let deadline = start + window;
    let spacing = window / PROBE_COUNT;
    let mut sent = 0;
    let mut next_probe = start;
    let mut buf = [0u8; 1514];
    loop {
        if sent < PROBE_COUNT && Instant::now() >= next_probe {
            socket.send(frame)?;
            sent += 1;
            next_probe += spacing;
        }
        let wake = if sent < PROBE_COUNT { next_probe.min(deadline) } else { deadline };
        tokio::select! {
            received = socket.recv(&mut buf) => {
                let n = received?;
                if let Some(found) = buf.get(..n).and_then(&holder) {
                    return Ok(Some(found));
                }
            }
            () = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
    const OTHER: Mac = Mac([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);

    #[test]
    fn announcement_frame_is_byte_exact() {
        let frame = Arp::announcement(MAC, VIP).to_frame();
        #[rustfmt::skip]
        let expected: [u8; FRAME_LEN] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  // Ethernet destination: broadcast
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55,  // Ethernet source
            0x08, 0x06,                          // EtherType ARP
            0x00, 0x01, 0x08, 0x00, 6, 4,        // Ethernet/IPv4, lengths 6 and 4
            0x00, 0x01,                          // request
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55,  // sender MAC
            198, 51, 100, 50,                    // sender IP = VIP
            0, 0, 0, 0, 0, 0,                    // target MAC unknown
            198, 51, 100, 50,                    // target IP = VIP
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn probe_frame_has_zero_sender_ip() {
        let frame = Arp::probe(MAC, VIP).to_frame();
        assert_eq!(&frame[0..6], &[0xff; 6]);
        assert_eq!(&frame[20..22], &[0, 1]);
        assert_eq!(&frame[22..28], &MAC.0);
        assert_eq!(&frame[28..32], &[0, 0, 0, 0]);
        assert_eq!(&frame[32..38], &[0; 6]);
        assert_eq!(&frame[38..42], &[198, 51, 100, 50]);
    }

    /// OTHER's reply to us: it holds the VIP.
    fn other_holds_the_vip() -> Arp {
        Arp {
            eth_dst: MAC,
            op: Op::Reply,
            sender_mac: OTHER,
            sender_ip: VIP,
            target_mac: MAC,
            target_ip: Ipv4Addr::UNSPECIFIED,
        }
    }

    #[test]
    fn parse_inverts_to_frame_and_accepts_padding() {
        let reply = other_holds_the_vip();
        let mut padded = reply.to_frame().to_vec();
        padded.resize(60, 0);
        assert_eq!(Arp::parse(&padded), Some(reply));
    }

    #[test]
    fn parse_rejects_what_is_not_ethernet_ipv4_arp() {
        let good = Arp::announcement(MAC, VIP).to_frame();
        assert_eq!(Arp::parse(&good[..41]), None);
        let mut ipv4 = good;
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(Arp::parse(&ipv4), None);
        let mut bad_op = good;
        bad_op[21] = 3;
        assert_eq!(Arp::parse(&bad_op), None);
        let mut bad_len = good;
        bad_len[19] = 16;
        assert_eq!(Arp::parse(&bad_len), None);
    }

    #[test]
    fn conflict_needs_the_vip_from_another_mac() {
        let reply = other_holds_the_vip();
        assert_eq!(conflicting_holder(&reply, VIP, MAC), Some(OTHER));
        // Our own announcement echoed back is no conflict.
        assert_eq!(conflicting_holder(&Arp::announcement(MAC, VIP), VIP, MAC), None);
        // Another host probing for the same address has sender 0.0.0.0: not a holder.
        assert_eq!(conflicting_holder(&Arp::probe(OTHER, VIP), VIP, MAC), None);
        // Someone else's address.
        let other_ip = Arp::announcement(OTHER, Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!(conflicting_holder(&other_ip, VIP, MAC), None);
    }
}
