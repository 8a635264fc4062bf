//! The heartbeat packet: a fixed binary layout, authenticated with HMAC-SHA256. Pure: bytes
//! in, bytes out.
//!
//! Layout, version 2 (all integers big-endian, 87 bytes in all):
//!
//! ```text
//! offset len  field
//!      0   4  magic "PBXH"
//!      4   1  version (2)
//!      5   4  cluster id
//!      9   2  sender's node id
//!     11   1  link index (into the config's links; both nodes share the config)
//!     12   8  boot counter (persisted, higher at every daemon start: see super::boot)
//!     20   8  sequence (per link, per boot, starts at 1)
//!     28   1  role code          (summary::Role::code)
//!     29   1  group phase code   (summary::GroupPhase::code)
//!     30   1  flags: bit 0 healthy, bit 1 handover, bit 2 fence request, bit 3 fenced,
//!                   bits 4-7 zero
//!     31   1  ping targets reachable
//!     32   1  ping targets configured
//!     33   4  active calls (0xFFFFFFFF: unknown)
//!     37   1  DRBD role code     (summary::DrbdRole::code; 0: no drbd resource)
//!     38   1  DRBD disk code     (summary::DrbdDisk::code; 0 when byte 37 is 0)
//!     39   8  echo: the receiver's boot counter last heard on this link (0: none)
//!     47   8  echo: the receiver's sequence last heard on this link
//!     55  32  HMAC-SHA256 (RFC 2104) over bytes 0..55 with the shared key
//! ```
//!
//! The echo tells the receiver whether its own heartbeats arrive: a link heard one way only
//! (a firewall dropping one direction) is seen as such by the side that is still heard.
//!
//! Version 1 carried a random boot id and the sender's wall-clock send time, and a new boot
//! was believed only if its send time was later than the last one seen: a node restarting
//! with its clock behind was refused as a replay until its clock caught up. Version 2 orders
//! boots by the persisted counter alone and carries no clock at all.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::summary::{DrbdBrief, DrbdDisk, DrbdRole, GroupPhase, NodeSummary, Role};

const MAGIC: &[u8; 4] = b"PBXH";
/// The only version this code speaks. A node running another version is reported as
/// `Malformed` so an operator mixing releases sees it in `pbxha status`.
pub const VERSION: u8 = 2;
/// Bytes covered by the HMAC.
const BODY_LEN: usize = 55;
/// SHA-256 output size (FIPS 180-4), which is also HMAC-SHA256's tag size.
const TAG_LEN: usize = 32;
/// Every version 2 packet has exactly this length.
pub const PACKET_LEN: usize = BODY_LEN + TAG_LEN;

const FLAG_HEALTHY: u8 = 1 << 0;
const FLAG_HANDOVER: u8 = 1 << 1;
const FLAG_FENCE_REQUEST: u8 = 1 << 2;
const FLAG_FENCED: u8 = 1 << 3;
const FLAGS_KNOWN: u8 = FLAG_HEALTHY | FLAG_HANDOVER | FLAG_FENCE_REQUEST | FLAG_FENCED;
/// The calls field's "cannot count" value.
const CALLS_UNKNOWN: u32 = u32::MAX;

type HmacSha256 = Hmac<Sha256>;

/// Everything in a packet besides the sender's summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub cluster_id: u32,
    pub node_id: u16,
    /// Index of the link the packet was sent on.
    pub link: u8,
    /// The sender's boot counter, higher at each of its starts ([`super::boot`]), so the
    /// receiver can tell a restarted peer (sequence starting over) from a replay.
    pub boot: u64,
    pub sequence: u64,
    /// The last of the receiver's heartbeats the sender accepted on this link.
    pub echo: Echo,
}

/// A heartbeat named by its sender's boot counter and sequence; all zero for none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Echo {
    pub boot: u64,
    pub sequence: u64,
}

/// A decoded, authenticated packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub header: Header,
    pub summary: NodeSummary,
}

/// Why a received packet was dropped. Each reason has its own counter in `pbxha status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Drop {
    /// Shorter than a packet.
    Truncated,
    /// Longer than a packet.
    Oversized,
    /// Bad magic, unknown version, or an authenticated packet with impossible field values
    /// (a sender bug rather than an attack).
    Malformed,
    /// Another cluster on the same segment (its cluster id differs); expected, not an attack.
    ForeignCluster,
    /// The HMAC does not match: wrong key on the peer, or a forgery.
    Forged,
    /// Authentic but already seen, older than what was seen, or from an earlier boot.
    Replayed,
    /// Authentic but from a node id that is not our peer (a third node sharing the key, or a
    /// replay of our own packets from an earlier start).
    UnknownNode,
    /// Authentic, but carrying the index of another link than the one it arrived on: the
    /// links are cross-wired or share a segment.
    WrongLink,
}

impl Drop {
    /// Every reason, in the order status shows them.
    pub const ALL: [Drop; 8] = [
        Drop::Truncated,
        Drop::Oversized,
        Drop::Malformed,
        Drop::ForeignCluster,
        Drop::Forged,
        Drop::Replayed,
        Drop::UnknownNode,
        Drop::WrongLink,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Truncated => "truncated",
            Drop::Oversized => "oversized",
            Drop::Malformed => "malformed",
            Drop::ForeignCluster => "foreign-cluster",
            Drop::Forged => "forged",
            Drop::Replayed => "replayed",
            Drop::UnknownNode => "unknown-node",
            Drop::WrongLink => "wrong-link",
        }
    }
}

impl std::fmt::Display for Drop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC hashes keys longer than a block and pads shorter ones (RFC 2104 §2), so every key
    // length is accepted; the error type only exists for other MACs sharing the trait.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Builds the packet for `summary` signed with `key`.
pub fn encode(header: &Header, summary: &NodeSummary, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PACKET_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&header.cluster_id.to_be_bytes());
    out.extend_from_slice(&header.node_id.to_be_bytes());
    out.push(header.link);
    out.extend_from_slice(&header.boot.to_be_bytes());
    out.extend_from_slice(&header.sequence.to_be_bytes());
    out.push(summary.role.code());
    out.push(summary.group.code());
    let mut flags = 0;
    if summary.healthy {
        flags |= FLAG_HEALTHY;
    }
    for (on, bit) in
        [(summary.handover, FLAG_HANDOVER), (summary.fence_request, FLAG_FENCE_REQUEST), (summary.fenced, FLAG_FENCED)]
    {
        if on {
            flags |= bit;
        }
    }
    out.push(flags);
    out.push(summary.reachable);
    out.push(summary.targets);
    out.extend_from_slice(&summary.calls.map_or(CALLS_UNKNOWN, |c| c.min(CALLS_UNKNOWN - 1)).to_be_bytes());
    match summary.drbd {
        Some(d) => out.extend_from_slice(&[d.role.code(), d.disk.code()]),
        None => out.extend_from_slice(&[0, 0]),
    }
    out.extend_from_slice(&header.echo.boot.to_be_bytes());
    out.extend_from_slice(&header.echo.sequence.to_be_bytes());
    debug_assert_eq!(out.len(), BODY_LEN);
    let mut m = mac(key);
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    out
}

fn be<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(&bytes[at..at + N]);
    a
}

/// Checks and decodes a received packet. The checks run cheapest and least trusting first
/// (length, magic and version, cluster id, HMAC, field values), so that field values are
/// only judged once the packet is known to come from a key holder. Replays and sender
/// identity are the tracker's business ([`super::tracker`]).
pub fn decode(bytes: &[u8], key: &[u8], expected_cluster_id: u32) -> Result<Packet, Drop> {
    // Another version has another length: named by its version, not as truncated or
    // oversized, so an operator mixing releases is told what is wrong.
    if bytes.len() > 4 && &bytes[0..4] == MAGIC && bytes[4] != VERSION {
        return Err(Drop::Malformed);
    }
    if bytes.len() < PACKET_LEN {
        return Err(Drop::Truncated);
    }
    if bytes.len() > PACKET_LEN {
        return Err(Drop::Oversized);
    }
    if &bytes[0..4] != MAGIC || bytes[4] != VERSION {
        return Err(Drop::Malformed);
    }
    let cluster_id = u32::from_be_bytes(be(bytes, 5));
    if cluster_id != expected_cluster_id {
        return Err(Drop::ForeignCluster);
    }
    let mut m = mac(key);
    m.update(&bytes[..BODY_LEN]);
    // verify_slice compares in constant time, so a forger learns nothing from timing.
    m.verify_slice(&bytes[BODY_LEN..]).map_err(|_| Drop::Forged)?;

    let role = Role::from_code(bytes[28]).ok_or(Drop::Malformed)?;
    let group = GroupPhase::from_code(bytes[29]).ok_or(Drop::Malformed)?;
    let flags = bytes[30];
    let (reachable, targets) = (bytes[31], bytes[32]);
    if flags & !FLAGS_KNOWN != 0 || reachable > targets {
        return Err(Drop::Malformed);
    }
    let drbd = match (bytes[37], bytes[38]) {
        (0, 0) => None,
        (role, disk) => Some(DrbdBrief {
            role: DrbdRole::from_code(role).ok_or(Drop::Malformed)?,
            disk: DrbdDisk::from_code(disk).ok_or(Drop::Malformed)?,
        }),
    };
    Ok(Packet {
        header: Header {
            cluster_id,
            node_id: u16::from_be_bytes(be(bytes, 9)),
            link: bytes[11],
            boot: u64::from_be_bytes(be(bytes, 12)),
            sequence: u64::from_be_bytes(be(bytes, 20)),
            echo: Echo { boot: u64::from_be_bytes(be(bytes, 39)), sequence: u64::from_be_bytes(be(bytes, 47)) },
        },
        summary: NodeSummary {
            role,
            group,
            healthy: flags & FLAG_HEALTHY != 0,
            reachable,
            targets,
            handover: flags & FLAG_HANDOVER != 0,
            calls: match u32::from_be_bytes(be(bytes, 33)) {
                CALLS_UNKNOWN => None,
                n => Some(n),
            },
            fence_request: flags & FLAG_FENCE_REQUEST != 0,
            fenced: flags & FLAG_FENCED != 0,
            drbd,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef-test-key";
    const CLUSTER: u32 = 0x0102_0304;

    fn header() -> Header {
        Header {
            cluster_id: CLUSTER,
            node_id: 2,
            link: 1,
            boot: 0xdead_beef_0bad_cafe,
            sequence: 42,
            echo: Echo { boot: 7, sequence: 0x0102_0304_0506 },
        }
    }

    fn summary() -> NodeSummary {
        NodeSummary { reachable: 1, targets: 2, ..NodeSummary::plain(Role::Primary, GroupPhase::Running) }
    }

    /// Re-signs a tampered body so the test reaches the checks after the HMAC.
    fn resign(mut bytes: Vec<u8>) -> Vec<u8> {
        let mut m = mac(KEY);
        m.update(&bytes[..BODY_LEN]);
        let tag = m.finalize().into_bytes();
        bytes[BODY_LEN..].copy_from_slice(&tag);
        bytes
    }

    #[test]
    fn round_trip() {
        for role in [Role::Starting, Role::Secondary, Role::Primary, Role::Standby, Role::Fault] {
            for group in [GroupPhase::Stopped, GroupPhase::Starting, GroupPhase::Running, GroupPhase::Stopping] {
                for (i, (healthy, handover)) in
                    [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate()
                {
                    let s = NodeSummary {
                        role,
                        group,
                        healthy,
                        handover,
                        reachable: 0,
                        targets: 3,
                        calls: [None, Some(0), Some(17), Some(u32::MAX - 1)][i],
                        fence_request: i % 2 == 0,
                        fenced: i >= 2,
                        drbd: [
                            None,
                            Some(DrbdBrief { role: DrbdRole::Primary, disk: DrbdDisk::UpToDate }),
                            Some(DrbdBrief { role: DrbdRole::Secondary, disk: DrbdDisk::Inconsistent }),
                            Some(DrbdBrief { role: DrbdRole::Unknown, disk: DrbdDisk::Unknown }),
                        ][i],
                    };
                    let bytes = encode(&header(), &s, KEY);
                    assert_eq!(bytes.len(), PACKET_LEN);
                    assert_eq!(decode(&bytes, KEY, CLUSTER), Ok(Packet { header: header(), summary: s }));
                }
            }
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let bytes = encode(&header(), &summary(), KEY);
        assert_eq!(&bytes[0..5], b"PBXH\x02");
        assert_eq!(&bytes[5..9], &[1, 2, 3, 4]);
        assert_eq!(&bytes[9..12], &[0, 2, 1]);
        assert_eq!(&bytes[12..20], &0xdead_beef_0bad_cafe_u64.to_be_bytes());
        assert_eq!(&bytes[20..28], &42u64.to_be_bytes());
        assert_eq!(&bytes[28..33], &[2, 2, FLAG_HEALTHY, 1, 2]);
        assert_eq!(&bytes[33..37], &u32::MAX.to_be_bytes(), "calls unknown");
        assert_eq!(&bytes[37..39], &[0, 0], "no drbd resource");
        assert_eq!(&bytes[39..47], &7u64.to_be_bytes(), "echoed boot");
        assert_eq!(&bytes[47..55], &0x0102_0304_0506u64.to_be_bytes(), "echoed sequence");
        let with_drbd =
            NodeSummary { drbd: Some(DrbdBrief { role: DrbdRole::Secondary, disk: DrbdDisk::Outdated }), ..summary() };
        let bytes = encode(&header(), &with_drbd, KEY);
        assert_eq!(bytes.len(), 87);
        assert_eq!(&bytes[37..39], &[2, 3]);
    }

    #[test]
    fn length_is_checked_first() {
        let bytes = encode(&header(), &summary(), KEY);
        assert_eq!(decode(&[], KEY, CLUSTER), Err(Drop::Truncated));
        assert_eq!(decode(&bytes[..PACKET_LEN - 1], KEY, CLUSTER), Err(Drop::Truncated));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode(&long, KEY, CLUSTER), Err(Drop::Oversized));
        // Even a foreign cluster's packet of the wrong length is reported by its length.
        assert_eq!(decode(&bytes[..10], KEY, 7), Err(Drop::Truncated));
    }

    #[test]
    fn bad_magic_or_version_is_malformed() {
        let mut bytes = encode(&header(), &summary(), KEY);
        bytes[0] = b'X';
        assert_eq!(decode(&bytes, KEY, CLUSTER), Err(Drop::Malformed));
        let mut bytes = encode(&header(), &summary(), KEY);
        // Checked before the cluster id: another version may lay the id out elsewhere.
        bytes[4] = 3;
        assert_eq!(decode(&bytes, KEY, 99), Err(Drop::Malformed));
        // A peer still on version 1 sends 79 bytes: named by its version, not its length.
        let mut v1 = encode(&header(), &summary(), KEY);
        v1[4] = 1;
        v1.resize(79, 0);
        assert_eq!(decode(&v1, KEY, CLUSTER), Err(Drop::Malformed));
    }

    #[test]
    fn foreign_cluster_is_told_apart_from_forgery() {
        let other = Header { cluster_id: 7, ..header() };
        let bytes = encode(&other, &summary(), b"their-own-key-of-16+");
        assert_eq!(decode(&bytes, KEY, CLUSTER), Err(Drop::ForeignCluster));
    }

    #[test]
    fn wrong_key_or_tampering_is_forged() {
        let bytes = encode(&header(), &summary(), b"some-other-key-0123");
        assert_eq!(decode(&bytes, KEY, CLUSTER), Err(Drop::Forged));
        let mut bytes = encode(&header(), &summary(), KEY);
        bytes[28] = Role::Secondary.code();
        assert_eq!(decode(&bytes, KEY, CLUSTER), Err(Drop::Forged));
        let mut bytes = encode(&header(), &summary(), KEY);
        bytes[PACKET_LEN - 1] ^= 1;
        assert_eq!(decode(&bytes, KEY, CLUSTER), Err(Drop::Forged));
    }

    #[test]
    fn forged_field_codes_are_forged_not_malformed() {
        // The HMAC is checked before the codes: an unauthenticated sender must not be able to
        // make us count "malformed" (which points at a peer bug).
        let mut bytes = encode(&header(), &summary(), KEY);
        bytes[28] = 200;
        assert_eq!(decode(&bytes, KEY, CLUSTER), Err(Drop::Forged));
    }

    #[test]
    fn authentic_bad_codes_are_malformed() {
        // 37/38: an unknown DRBD role or disk code, or a disk without a role.
        for (at, value) in [(28, 5), (29, 4), (30, 0x10), (30, 0x80), (31, 3), (37, 4), (38, 6), (38, 1)] {
            let mut bytes = encode(&header(), &summary(), KEY);
            bytes[at] = value;
            assert_eq!(decode(&resign(bytes), KEY, CLUSTER), Err(Drop::Malformed), "byte {at} = {value}");
        }
    }

    /// A small xorshift generator: fixed seed, no dependency, same sequence on every run.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn garbage_truncation_and_bit_flips_never_panic_nor_pass() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let good = encode(&header(), &summary(), KEY);
        for i in 0..20_000 {
            let bytes: Vec<u8> = match i % 4 {
                0 => (0..rng.below(2 * PACKET_LEN)).map(|_| rng.next() as u8).collect(),
                1 => good[..rng.below(PACKET_LEN)].to_vec(),
                2 => {
                    let mut b = good.clone();
                    for _ in 0..1 + rng.below(4) {
                        let bit = rng.below(PACKET_LEN * 8);
                        b[bit / 8] ^= 1 << (bit % 8);
                    }
                    if b == good {
                        // Two flips of the same bit cancelled out.
                        b[0] ^= 1;
                    }
                    b
                }
                _ => {
                    // Right magic, version and cluster, random rest: gets as far as the HMAC.
                    let mut b: Vec<u8> = (0..PACKET_LEN).map(|_| rng.next() as u8).collect();
                    b[..9].copy_from_slice(&good[..9]);
                    b
                }
            };
            assert!(decode(&bytes, KEY, CLUSTER).is_err(), "iteration {i} accepted {bytes:02x?}");
        }
    }
}
