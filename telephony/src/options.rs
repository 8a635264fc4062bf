//! The SIP OPTIONS client: one request, one transaction, over UDP (with RFC 3261
//! retransmissions) or TCP, answering with the final response's code, reason, round-trip
//! time and headers.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rsipstack::rsip::{self, HasHeaders, Header, SipMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::wire::{self, Frame, BRANCH_COOKIE, MAX_MESSAGE};
use crate::Error;

/// RFC 3261 §17.1.1.1: the round-trip estimate T1 that starts retransmission timer E.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.1.1: T2 caps the retransmission interval of non-INVITE requests
/// (§17.1.2.2, Timer E) and is the interval once a provisional response has arrived.
pub const T2: Duration = Duration::from_secs(4);
/// Names pbxha in User-Agent so a PBX log shows who is probing it.
pub const USER_AGENT: &str = concat!("pbxha/", env!("CARGO_PKG_VERSION"));
/// RFC 3261 §8.1.1.6 recommends 70.
const MAX_FORWARDS: u32 = 70;

/// How the request travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Transport {
    /// The token used in Via (`SIP/2.0/UDP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

/// One OPTIONS probe to make.
#[derive(Clone, Debug)]
pub struct Probe {
    pub target: SocketAddr,
    pub transport: Transport,
    /// Whole-transaction deadline; it also caps the retransmission schedule.
    pub timeout: Duration,
    /// Request-URI; `sip:<target>` when unset.
    pub request_uri: Option<String>,
}

impl Probe {
    /// A UDP probe of `target` with the given deadline.
    pub fn udp(target: SocketAddr, timeout: Duration) -> Self {
        Probe { target, transport: Transport::Udp, timeout, request_uri: None }
    }

    /// A TCP probe of `target` with the given deadline.
    pub fn tcp(target: SocketAddr, timeout: Duration) -> Self {
        Probe { target, transport: Transport::Tcp, timeout, request_uri: None }
    }
}

/// The final response a probe got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionsResponse {
    pub status: u16,
    /// The phrase on the status line as sent (the standard one when the peer sent none).
    pub reason: String,
    /// From the first transmission to the final response, so retransmissions count: it is
    /// how long the PBX took to answer, which is what failover timing needs.
    pub rtt: Duration,
    /// Who sent it (on UDP this can differ from the target).
    pub source: SocketAddr,
    /// Every header in order, with long-form names (compact names are expanded).
    pub headers: Vec<(String, String)>,
}

impl OptionsResponse {
    /// The first value of header `name` (any case, long or compact form).
    pub fn header(&self, name: &str) -> Option<&str> {
        let wanted = wire::canonical_name(name);
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(&wanted)).map(|(_, v)| v.as_str())
    }
}

/// What identifies our transaction in responses (RFC 3261 §17.1.3 matches on the top Via
/// branch and the CSeq method; the Call-ID check also rejects a stray that reuses a branch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionId {
    pub branch: String,
    pub call_id: String,
    pub from_tag: String,
}

impl TransactionId {
    /// Fresh random identifiers; the branch carries the RFC 3261 cookie.
    pub fn random() -> Self {
        TransactionId {
            branch: format!("{BRANCH_COOKIE}{}", wire::token(16)),
            call_id: format!("{}@pbxha", wire::token(20)),
            from_tag: wire::token(10),
        }
    }
}

/// The OPTIONS request as bytes. `local` is our address as the peer should see it in Via.
pub fn build_request(id: &TransactionId, local: SocketAddr, probe: &Probe) -> Result<Vec<u8>, Error> {
    let uri_text = probe.request_uri.clone().unwrap_or_else(|| format!("sip:{}", host_port(probe.target)));
    // The parser is lenient; whitespace would split the request line or inject headers.
    if uri_text.chars().any(char::is_whitespace) {
        return Err(Error::RequestUri { uri: uri_text, message: "contains whitespace".into() });
    }
    let uri =
        rsip::parse_uri(&uri_text).map_err(|e| Error::RequestUri { uri: uri_text.clone(), message: e.to_string() })?;
    let headers = vec![
        Header::Via(rsip::Via::new(format!(
            "SIP/2.0/{} {};branch={};rport",
            probe.transport,
            host_port(local),
            id.branch
        ))),
        Header::MaxForwards(rsip::MaxForwards::new(MAX_FORWARDS.to_string())),
        Header::From(rsip::From::new(format!("<sip:pbxha@{}>;tag={}", host(local.ip()), id.from_tag))),
        Header::To(rsip::To::new(format!("<{uri}>"))),
        Header::CallId(rsip::CallId::new(id.call_id.clone())),
        Header::CSeq(rsip::CSeq::new("1 OPTIONS")),
        Header::UserAgent(rsip::UserAgent::new(USER_AGENT)),
        Header::Accept(rsip::Accept::new("application/sdp")),
        Header::ContentLength(rsip::ContentLength::new("0")),
    ];
    Ok(rsip::Request {
        method: rsip::Method::Options,
        uri,
        version: rsip::Version::V2,
        headers: rsip::Headers(headers),
        body: Vec::new(),
    }
    .to_bytes())
}

/// What a received message means for our transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum Matched {
    /// Not a response to us: garbage, a stray, a late answer to an earlier probe.
    Ignore,
    /// A 1xx: the peer is working on it.
    Provisional,
    /// The final response: status, reason, headers.
    Final { status: u16, reason: String, headers: Vec<(String, String)> },
}

/// Matches one received message against our transaction. Pure, total: any bytes in.
pub fn match_response(bytes: &[u8], id: &TransactionId) -> Matched {
    let Some(SipMessage::Response(resp)) = wire::parse(bytes) else {
        return Matched::Ignore;
    };
    let headers = resp.headers();
    let ours = wire::top_branch(headers).as_deref() == Some(id.branch.as_str())
        && wire::header(headers, "Call-ID").map(str::trim) == Some(id.call_id.as_str())
        && wire::cseq_method(headers).is_some_and(|m| m.eq_ignore_ascii_case("OPTIONS"));
    if !ours {
        return Matched::Ignore;
    }
    let status = resp.status_code.code();
    if status < 200 {
        return Matched::Provisional;
    }
    let reason = resp.wire_reason.clone().unwrap_or_else(|| resp.status_code.text().to_string());
    let headers = headers.iter().map(|h| (h.name().to_string(), h.value().to_string())).collect();
    Matched::Final { status, reason, headers }
}

/// Sends one OPTIONS and waits for its final response.
pub async fn probe(probe: &Probe) -> Result<OptionsResponse, Error> {
    match probe.transport {
        Transport::Udp => probe_udp(probe).await,
        Transport::Tcp => probe_tcp(probe).await,
    }
}

/// The next retransmission interval after `current` (RFC 3261 §17.1.2.2, Timer E).
pub fn next_interval(current: Duration) -> Duration {
    (current * 2).min(T2)
}

async fn probe_udp(probe: &Probe) -> Result<OptionsResponse, Error> {
    let target = probe.target;
    let local_ip = local_ip_towards(target).await?;
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0))
        .await
        .map_err(|e| Error::io(format!("binding a UDP socket on {local_ip} to probe {target}"), e))?;
    let local = socket.local_addr().map_err(|e| Error::io("reading the probe socket's address", e))?;
    let id = TransactionId::random();
    let request = build_request(&id, local, probe)?;

    let started = Instant::now();
    let deadline = started + probe.timeout;
    let mut interval = T1;
    let mut next_send = started;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout { target, transport: "UDP", after: probe.timeout });
        }
        if now >= next_send {
            socket
                .send_to(&request, target)
                .await
                .map_err(|e| Error::io(format!("sending OPTIONS to {target} over UDP"), e))?;
            next_send = now + interval;
            interval = next_interval(interval);
        }
        let wake = next_send.min(deadline);
        let Ok(received) = tokio::time::timeout_at(wake, socket.recv_from(&mut buf)).await else {
            continue;
        };
        let (len, source) = received.map_err(|e| Error::io(format!("receiving from {target} over UDP"), e))?;
        match match_response(&buf[..len], &id) {
            Matched::Ignore => {
                tracing::debug!(%source, len, "ignoring a datagram that is not our OPTIONS response");
            }
            Matched::Provisional => {
                // §17.1.2.2: in Proceeding, retransmit every T2.
                interval = T2;
                next_send = Instant::now() + T2;
            }
            Matched::Final { status, reason, headers } => {
                return Ok(OptionsResponse { status, reason, rtt: started.elapsed(), source, headers })
            }
        }
    }
}

async fn probe_tcp(probe: &Probe) -> Result<OptionsResponse, Error> {
    let target = probe.target;
    let started = Instant::now();
    let deadline = started + probe.timeout;
    let timeout = || Error::Timeout { target, transport: "TCP", after: probe.timeout };
    let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(target))
        .await
        .map_err(|_| timeout())?
        .map_err(|e| Error::io(format!("connecting to {target} over TCP"), e))?;
    let local = stream.local_addr().map_err(|e| Error::io("reading the probe connection's address", e))?;
    let id = TransactionId::random();
    let request = build_request(&id, local, probe)?;
    tokio::time::timeout_at(deadline, stream.write_all(&request))
        .await
        .map_err(|_| timeout())?
        .map_err(|e| Error::io(format!("sending OPTIONS to {target} over TCP"), e))?;

    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match wire::next_frame(&buf).map_err(|message| Error::Framing { target, message })? {
            Frame::Message { start, end } => {
                if let Matched::Final { status, reason, headers } = match_response(&buf[start..end], &id) {
                    return Ok(OptionsResponse { status, reason, rtt: started.elapsed(), source: target, headers });
                }
                buf.drain(..end);
            }
            Frame::Incomplete => {
                let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
                    .await
                    .map_err(|_| timeout())?
                    .map_err(|e| Error::io(format!("reading from {target} over TCP"), e))?;
                if n == 0 {
                    return Err(Error::Closed { target });
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// The local address the kernel would use to reach `target`, found by connecting a
/// throwaway UDP socket (no packet is sent), so Via names a reachable address.
pub(crate) async fn local_ip_towards(target: SocketAddr) -> Result<IpAddr, Error> {
    let any: SocketAddr =
        if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let probe = UdpSocket::bind(any).await.map_err(|e| Error::io("binding a UDP socket", e))?;
    probe.connect(target).await.map_err(|e| Error::io(format!("finding a route to {target}"), e))?;
    Ok(probe.local_addr().map_err(|e| Error::io("reading a socket's address", e))?.ip())
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn host_port(addr: SocketAddr) -> String {
    format!("{}:{}", host(addr.ip()), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TransactionId {
        TransactionId { branch: "z9hG4bKtest1".into(), call_id: "c1@pbxha".into(), from_tag: "ft".into() }
    }

    fn response(status_line: &str, branch: &str, call_id: &str) -> String {
        format!(
            "{status_line}\r\nv: SIP/2.0/UDP 198.51.100.20:5060;branch={branch}\r\ni: {call_id}\r\nf: <sip:pbxha@198.51.100.20>;tag=ft\r\nt: <sip:198.51.100.100>;tag=x\r\nCSeq: 1 OPTIONS\r\nX-Pbxha-Node: a\r\nl: 0\r\n\r\n"
        )
    }

    #[test]
    fn request_carries_every_mandatory_header() {
        let probe = Probe::udp("198.51.100.100:5060".parse().unwrap(), Duration::from_secs(2));
        let bytes = build_request(&id(), "198.51.100.20:40000".parse().unwrap(), &probe).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("OPTIONS sip:198.51.100.100:5060 SIP/2.0\r\n"), "{text}");
        assert!(text.contains("Via: SIP/2.0/UDP 198.51.100.20:40000;branch=z9hG4bKtest1;rport\r\n"), "{text}");
        assert!(text.contains("Max-Forwards: 70\r\n"), "{text}");
        assert!(text.contains("From: <sip:pbxha@198.51.100.20>;tag=ft\r\n"), "{text}");
        assert!(text.contains("To: <sip:198.51.100.100:5060>\r\n"), "{text}");
        assert!(text.contains("Call-ID: c1@pbxha\r\n"), "{text}");
        assert!(text.contains("CSeq: 1 OPTIONS\r\n"), "{text}");
        assert!(text.contains("User-Agent: pbxha/"), "{text}");
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
        // And it reads back as a request.
        assert!(matches!(wire::parse(&bytes), Some(SipMessage::Request(_))));
    }

    #[test]
    fn random_ids_carry_the_cookie_and_differ() {
        let (a, b) = (TransactionId::random(), TransactionId::random());
        assert!(a.branch.starts_with("z9hG4bK") && a.branch.len() > 7);
        assert_ne!(a.branch, b.branch);
        assert_ne!(a.call_id, b.call_id);
    }

    #[test]
    fn compact_final_response_matches_with_reason_and_headers() {
        let m = match_response(response("SIP/2.0 404 Nobody Here", "z9hG4bKtest1", "c1@pbxha").as_bytes(), &id());
        let Matched::Final { status, reason, headers } = m else { panic!("{m:?}") };
        assert_eq!((status, reason.as_str()), (404, "Nobody Here"));
        assert!(headers.contains(&("Call-ID".to_string(), "c1@pbxha".to_string())), "{headers:?}");
        assert!(headers.contains(&("X-Pbxha-Node".to_string(), "a".to_string())), "{headers:?}");
    }

    #[test]
    fn standard_reason_is_reported_when_the_peer_sends_it() {
        let m = match_response(response("SIP/2.0 200 OK", "z9hG4bKtest1", "c1@pbxha").as_bytes(), &id());
        assert!(matches!(m, Matched::Final { status: 200, ref reason, .. } if reason == "OK"), "{m:?}");
    }

    #[test]
    fn strays_provisionals_and_requests_are_told_apart() {
        let id = id();
        assert_eq!(
            match_response(response("SIP/2.0 200 OK", "z9hG4bKother", "c1@pbxha").as_bytes(), &id),
            Matched::Ignore
        );
        assert_eq!(
            match_response(response("SIP/2.0 200 OK", "z9hG4bKtest1", "other@x").as_bytes(), &id),
            Matched::Ignore
        );
        assert_eq!(
            match_response(response("SIP/2.0 100 Trying", "z9hG4bKtest1", "c1@pbxha").as_bytes(), &id),
            Matched::Provisional
        );
        let probe = Probe::udp("127.0.0.1:5060".parse().unwrap(), Duration::from_secs(1));
        assert_eq!(
            match_response(&build_request(&id, "127.0.0.1:1".parse().unwrap(), &probe).unwrap(), &id),
            Matched::Ignore
        );
        assert_eq!(match_response(b"\xc3\x28garbage\r\n\r\n", &id), Matched::Ignore);
    }

    #[test]
    fn a_bad_request_uri_is_an_error_naming_it() {
        let mut probe = Probe::udp("127.0.0.1:5060".parse().unwrap(), Duration::from_secs(1));
        probe.request_uri = Some("not a uri".into());
        let err = build_request(&id(), "127.0.0.1:1".parse().unwrap(), &probe).unwrap_err();
        assert!(err.to_string().contains("not a uri"), "{err}");
        probe.request_uri = Some("sip:".into());
        assert!(build_request(&id(), "127.0.0.1:1".parse().unwrap(), &probe).is_err());
        probe.request_uri = Some("sip:ping@198.51.100.100".into());
        assert!(build_request(&id(), "127.0.0.1:1".parse().unwrap(), &probe).is_ok());
    }

    #[test]
    fn retransmission_intervals_double_up_to_t2() {
        let mut interval = T1;
        let mut seen = vec![interval];
        for _ in 0..5 {
            interval = next_interval(interval);
            seen.push(interval);
        }
        let ms: Vec<u128> = seen.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 4000, 4000]);
    }
}
