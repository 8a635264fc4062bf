//! Asks: a request from one daemon to the other and its answer, on the heartbeat sockets,
//! authenticated with the same key. `pbxha drill` runs on one node and needs the peer's
//! side: its config fingerprint, a SIP probe sent from the peer while the group moves to it,
//! and a switchover started there. Pure: bytes in, bytes out.
//!
//! Layout (integers big-endian):
//!
//! ```text
//! offset len  field
//!      0   4  magic "PBXA"
//!      4   1  version (1)
//!      5   4  cluster id
//!      9   2  sender's node id
//!     11   1  kind: 1 request, 2 answer
//!     12   8  the requester's boot counter
//!     20   8  request id (per requester boot, increasing)
//!     28   8  the responder's boot counter, as the requester last heard it
//!     36   2  body length n
//!     38   n  body: the Ask or Answer as JSON
//!   38+n  32  HMAC-SHA256 over bytes 0..38+n with the shared key
//! ```
//!
//! Replays: a responder takes a request only for its own current boot and only with a
//! (requester boot, id) above the last one taken; the same pair again from the same address
//! (a retry) gets the answer already given, from anywhere else (the copy sent on the other
//! link, a recording) nothing. A requester takes an answer only
//! for an id it is waiting on. So a recorded request cannot start a second switchover, in
//! this boot or after the responder restarts.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::Fingerprint;

const MAGIC: &[u8; 4] = b"PBXA";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 38;
const TAG_LEN: usize = 32;
/// Bodies larger than this are not ours (a fingerprint of a few dozen sections is ~5 kB).
pub const MAX_BODY: usize = 16 * 1024;

/// What one daemon asks of the other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "kebab-case")]
pub enum Ask {
    /// The fingerprint of the config the peer runs with.
    Fingerprint,
    /// Start sending SIP OPTIONS over UDP to `target` every `every_ms`, from the peer, until
    /// [`Ask::ProbeReport`] with `stop` or [`crate::drill::probe::LIMIT`].
    ProbeStart { target: std::net::SocketAddr, every_ms: u64 },
    /// What the peer's probe saw so far; `stop` ends it.
    ProbeReport { stop: bool },
    /// The control socket's switchover, run on the peer.
    Switchover { now: bool },
    /// Write `token` into the drill's canary file on the replicated filesystem, or read and
    /// remove it (`write` false) ([`crate::drill::canary`]).
    ReplicaCanary { token: String, write: bool },
}

/// The peer's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum Answer {
    Fingerprint { node: String, fingerprint: Fingerprint },
    Probe { report: crate::drill::probe::ProbeReport },
    Done { ok: bool, message: String },
}

/// One decoded, authenticated message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub node_id: u16,
    /// The requester's boot and request id.
    pub boot: u64,
    pub id: u64,
    /// The responder's boot as the requester knew it (meaningful in requests).
    pub responder_boot: u64,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Request(Ask),
    Answer(Answer),
}

/// Whether `bytes` claim to be an ask (rather than a heartbeat).
pub fn is_ask(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (RFC 2104 §2).
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

pub fn encode(cluster_id: u32, message: &Message, key: &[u8]) -> Vec<u8> {
    let (kind, body) = match &message.body {
        Body::Request(ask) => (1, serde_json::to_vec(ask)),
        Body::Answer(answer) => (2, serde_json::to_vec(answer)),
    };
    // Our own types always serialize.
    let body = body.unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&cluster_id.to_be_bytes());
    out.extend_from_slice(&message.node_id.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&message.boot.to_be_bytes());
    out.extend_from_slice(&message.id.to_be_bytes());
    out.extend_from_slice(&message.responder_boot.to_be_bytes());
    out.extend_from_slice(&(body.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(&body);
    let mut m = mac(key);
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    out
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Checks and decodes an ask; the reasons are the heartbeat's, counted with them.
pub fn decode(bytes: &[u8], key: &[u8], expected_cluster_id: u32) -> Result<Message, super::Drop> {
    use super::Drop;
    if bytes.len() < HEADER_LEN + TAG_LEN {
        return Err(Drop::Truncated);
    }
    if !is_ask(bytes) || bytes[4] != VERSION {
        return Err(Drop::Malformed);
    }
    if u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) != expected_cluster_id {
        return Err(Drop::ForeignCluster);
    }
    let len = usize::from(u16::from_be_bytes([bytes[36], bytes[37]]));
    if len > MAX_BODY || bytes.len() > HEADER_LEN + len + TAG_LEN {
        return Err(Drop::Oversized);
    }
    if bytes.len() < HEADER_LEN + len + TAG_LEN {
        return Err(Drop::Truncated);
    }
    let signed = HEADER_LEN + len;
    let mut m = mac(key);
    m.update(&bytes[..signed]);
    m.verify_slice(&bytes[signed..]).map_err(|_| Drop::Forged)?;
    let text = &bytes[HEADER_LEN..signed];
    let body = match bytes[11] {
        1 => Body::Request(serde_json::from_slice(text).map_err(|_| Drop::Malformed)?),
        2 => Body::Answer(serde_json::from_slice(text).map_err(|_| Drop::Malformed)?),
        _ => return Err(Drop::Malformed),
    };
    Ok(Message {
        node_id: u16::from_be_bytes([bytes[9], bytes[10]]),
        boot: u64_at(bytes, 12),
        id: u64_at(bytes, 20),
        responder_boot: u64_at(bytes, 28),
        body,
    })
}

/// The responder's memory of the last request it took, for the replay rule above.
#[derive(Debug, Default)]
pub struct Taken {
    last: Option<(u64, u64)>,
    /// Where it came from: a copy from elsewhere is not answered, so a recorded request sent
    /// with a forged source cannot aim the (larger) answer at a third party.
    from: Option<std::net::SocketAddr>,
    /// The answer to `last`, once given.
    answer: Option<Answer>,
}

/// What to do with a request.
#[derive(Debug, PartialEq)]
pub enum Take {
    /// New: handle it, then [`Taken::answered`].
    New,
    /// A retry of the last one from its address: send this answer again (none yet: it is
    /// being handled).
    Again(Option<Answer>),
    /// The last one from another address: the copy on another link (every ask goes on all),
    /// or a recording; ignored, not counted.
    Copy,
    Replayed,
}

impl Taken {
    pub fn take(&mut self, message: &Message, own_boot: u64, from: std::net::SocketAddr) -> Take {
        if message.responder_boot != own_boot {
            return Take::Replayed;
        }
        let pair = (message.boot, message.id);
        match self.last {
            Some(last) if pair == last && self.from == Some(from) => Take::Again(self.answer.clone()),
            Some(last) if pair == last => Take::Copy,
            Some(last) if pair < last => Take::Replayed,
            _ => {
                self.last = Some(pair);
                self.from = Some(from);
                self.answer = None;
                Take::New
            }
        }
    }

    pub fn answered(&mut self, boot: u64, id: u64, answer: &Answer) {
        if self.last == Some((boot, id)) {
            self.answer = Some(answer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::Drop;

    const KEY: &[u8] = b"0123456789abcdef-test-key";

    fn request(id: u64) -> Message {
        Message { node_id: 1, boot: 7, id, responder_boot: 9, body: Body::Request(Ask::Switchover { now: true }) }
    }

    #[test]
    fn round_trip_and_tampering() {
        let answer = Message {
            body: Body::Answer(Answer::Done { ok: true, message: "switchover accepted".into() }),
            ..request(3)
        };
        for m in [request(3), answer] {
            let bytes = encode(5, &m, KEY);
            assert!(is_ask(&bytes));
            assert_eq!(decode(&bytes, KEY, 5), Ok(m.clone()));
            assert_eq!(decode(&bytes, KEY, 6), Err(Drop::ForeignCluster));
            assert_eq!(decode(&bytes, b"another-key-of-some-len", 5), Err(Drop::Forged));
            for at in [11, 20, 28, HEADER_LEN + 2, bytes.len() - 1] {
                let mut b = bytes.clone();
                b[at] ^= 1;
                assert_eq!(decode(&b, KEY, 5), Err(Drop::Forged), "byte {at}");
            }
            assert_eq!(decode(&bytes[..bytes.len() - 1], KEY, 5), Err(Drop::Truncated));
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(decode(&long, KEY, 5), Err(Drop::Oversized));
        }
    }

    #[test]
    fn a_request_is_taken_once_and_only_for_this_boot() {
        let (hb, public, elsewhere) = (
            "203.0.113.1:694".parse().unwrap(),
            "198.51.100.1:694".parse().unwrap(),
            "198.51.100.66:694".parse().unwrap(),
        );
        let mut taken = Taken::default();
        assert_eq!(taken.take(&request(3), 9, hb), Take::New);
        assert_eq!(taken.take(&request(3), 9, public), Take::Copy, "the copy on the other link is not handled");
        assert_eq!(taken.take(&request(3), 9, hb), Take::Again(None), "a retry, still being handled");
        let done = Answer::Done { ok: true, message: "ok".into() };
        taken.answered(7, 3, &done);
        assert_eq!(taken.take(&request(3), 9, hb), Take::Again(Some(done)), "a retry gets the same answer");
        assert_eq!(taken.take(&request(3), 9, elsewhere), Take::Copy, "nor is a copy from elsewhere answered");
        assert_eq!(taken.take(&request(2), 9, hb), Take::Replayed, "an older request");
        assert_eq!(taken.take(&request(4), 10, hb), Take::Replayed, "for an earlier boot of the responder");
        assert_eq!(taken.take(&request(4), 9, hb), Take::New);
        // A restarted requester starts its ids over under a higher boot.
        assert_eq!(taken.take(&Message { boot: 8, ..request(1) }, 9, hb), Take::New);
    }
}
