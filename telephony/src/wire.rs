//! What the client and the responder share about SIP on the wire: a parser front door that
//! never fails loudly, header lookup that understands compact names, TCP stream framing and
//! the random tokens a transaction is identified by.

use rand::distributions::Alphanumeric;
use rand::Rng;
use rsipstack::rsip::{self, Header, Headers, SipMessage};

/// The RFC 3261 §8.1.1.7 magic cookie that marks a branch as unique per transaction.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// Largest message accepted on either transport: the largest UDP payload, which also bounds
/// what one TCP peer can make us buffer.
pub const MAX_MESSAGE: usize = 65_535;

/// Parses one SIP message; anything that is not one (garbage, truncation, a line that is
/// not UTF-8 where it matters) is `None`, because a prober and a responder both simply
/// ignore what they cannot read.
pub fn parse(bytes: &[u8]) -> Option<SipMessage> {
    SipMessage::try_from(bytes).ok()
}

/// The long form of a header name, so `v` finds `Via` and `i` finds `Call-ID`
/// (RFC 3261 §7.3.3 compact forms); unknown names come back as given.
pub fn canonical_name(name: &str) -> String {
    rsip::headers::make_header(name, String::new()).name().to_string()
}

/// The values of every header called `name` (long or compact form, any case), in order.
pub fn header_values<'a>(headers: &'a Headers, name: &str) -> impl Iterator<Item = &'a str> + 'a {
    let wanted = canonical_name(name);
    headers.iter().filter(move |h| h.name().eq_ignore_ascii_case(&wanted)).map(Header::value)
}

/// The first value of the header called `name`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    header_values(headers, name).next()
}

/// The branch parameter of the topmost Via entry.
pub fn top_branch(headers: &Headers) -> Option<String> {
    let via = header(headers, "Via")?;
    // Several Via entries may share one header line, separated by commas.
    let first = via.split(',').next()?;
    let typed = rsip::typed::Via::parse(first).ok()?;
    typed.branch().map(ToString::to_string)
}

/// The method named in CSeq (`1 OPTIONS` gives `OPTIONS`).
pub fn cseq_method(headers: &Headers) -> Option<&str> {
    header(headers, "CSeq")?.split_whitespace().nth(1)
}

/// A random token of `len` alphanumerics for branches, tags and Call-IDs.
pub fn token(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Where the next message in a TCP byte stream lies.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// More bytes are needed.
    Incomplete,
    /// `buf[start..end]` is one whole message; bytes before `start` are keep-alive CRLFs
    /// (RFC 5626 §3.5.1) to drop.
    Message { start: usize, end: usize },
}

/// Finds the first message in a stream buffer. A stream has no datagram boundaries, so the
/// message length comes from Content-Length (mandatory on streams, RFC 3261 §18.3); a stream
/// whose header section or body outgrows [`MAX_MESSAGE`] cannot be resynchronised and is
/// an error.
pub fn next_frame(buf: &[u8]) -> Result<Frame, String> {
    let start = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
    let rest = &buf[start..];
    let Some(head_len) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
        if rest.len() > MAX_MESSAGE {
            return Err(format!("no end of header section within {MAX_MESSAGE} bytes"));
        }
        return Ok(Frame::Incomplete);
    };
    let head = &rest[..head_len];
    let mut body_len = 0usize;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = String::from_utf8_lossy(line);
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            body_len =
                value.trim().parse().map_err(|_| format!("Content-Length `{}` is not a number", value.trim()))?;
        }
    }
    let end = head_len + 4 + body_len;
    if end > MAX_MESSAGE {
        return Err(format!("message of {end} bytes exceeds {MAX_MESSAGE}"));
    }
    if rest.len() < end {
        return Ok(Frame::Incomplete);
    }
    Ok(Frame::Message { start, end: start + end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::rsip::HasHeaders;

    const COMPACT: &str = "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKabc;rport, SIP/2.0/UDP 198.51.100.1\r\ni: call-1@pbxha\r\nf: <sip:pbxha@198.51.100.20>;tag=f1\r\nt: <sip:198.51.100.100>;tag=t1\r\nCSeq: 1 OPTIONS\r\nX-Pbxha-Node: b\r\nl: 0\r\n\r\n";

    #[test]
    fn compact_headers_are_found_by_long_and_short_names() {
        let msg = parse(COMPACT.as_bytes()).unwrap();
        let h = msg.headers();
        assert_eq!(header(h, "Call-ID"), Some("call-1@pbxha"));
        assert_eq!(header(h, "i"), Some("call-1@pbxha"));
        assert_eq!(header(h, "x-pbxha-node"), Some("b"));
        assert_eq!(top_branch(h).as_deref(), Some("z9hG4bKabc"));
        assert_eq!(cseq_method(h), Some("OPTIONS"));
        assert_eq!(header(h, "Contact"), None);
    }

    #[test]
    fn garbage_is_not_a_message() {
        assert!(parse(b"").is_none());
        assert!(parse(b"\xff\xfe\x00garbage").is_none());
        assert!(parse(b"SIP/2.0 abc OK\r\n\r\n").is_none());
    }

    #[test]
    fn frames_split_a_stream_and_skip_keepalives() {
        let one = "OPTIONS sip:x SIP/2.0\r\nl: 3\r\n\r\nabc";
        let stream = format!("\r\n\r\n{one}{one}");
        let Ok(Frame::Message { start, end }) = next_frame(stream.as_bytes()) else { panic!() };
        assert_eq!(&stream[start..end], one);
        assert_eq!(next_frame(&stream.as_bytes()[end..]), Ok(Frame::Message { start: 0, end: one.len() }));
        assert_eq!(next_frame(&one.as_bytes()[..one.len() - 1]), Ok(Frame::Incomplete));
        assert_eq!(next_frame(b"\r\n"), Ok(Frame::Incomplete));
    }

    #[test]
    fn unframeable_streams_are_errors() {
        assert!(next_frame(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(next_frame(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n").is_err());
        assert!(next_frame(&vec![b'a'; MAX_MESSAGE + 1]).is_err());
    }
}
