//! A minimal SIP endpoint for the lab and for tests: it answers OPTIONS with a configurable
//! status and an `X-Pbxha-Node` header naming the node, every other method but ACK with
//! 501, over UDP and optionally TCP. Stateless: the answer is a pure function of the request.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::rsip::{self, HasHeaders, Header, Method, SipMessage, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

use crate::wire::{self, Frame, MAX_MESSAGE};
use crate::Error;

/// The header that tells a prober which node answered on the VIP.
pub const NODE_HEADER: &str = "X-Pbxha-Node";
/// TCP connections served at once; more are closed on accept so a flood cannot exhaust
/// file descriptors.
const MAX_TCP_CONNECTIONS: usize = 64;
/// A TCP connection silent this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(60);

/// How the responder answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponderConfig {
    /// Sent in [`NODE_HEADER`] on every response.
    pub node: String,
    /// The status OPTIONS gets: 200 normally; tests and the lab set others to act out a
    /// sick PBX (503) or a misconfigured one (404).
    pub options_status: u16,
}

impl ResponderConfig {
    /// Answers OPTIONS with 200 OK on behalf of `node`.
    pub fn new(node: impl Into<String>) -> Self {
        ResponderConfig { node: node.into(), options_status: 200 }
    }
}

/// The response to one received message, or `None` when nothing should be sent back:
/// garbage, responses, ACK (RFC 3261 §17.2.1 never answers it) and requests lacking the
/// headers a response must copy (it could not be routed or matched).
pub fn respond(message: &[u8], config: &ResponderConfig) -> Option<Vec<u8>> {
    let Some(SipMessage::Request(req)) = wire::parse(message) else {
        return None;
    };
    if req.method == Method::Ack {
        return None;
    }
    let headers = req.headers();
    // RFC 3261 §8.2.6.2: Via (all, in order), From, To, Call-ID and CSeq are copied.
    let vias: Vec<Header> = headers.iter().filter(|h| matches!(h, Header::Via(_))).cloned().collect();
    let from = headers.iter().find(|h| matches!(h, Header::From(_)))?.clone();
    let call_id = headers.iter().find(|h| matches!(h, Header::CallId(_)))?.clone();
    let cseq = headers.iter().find(|h| matches!(h, Header::CSeq(_)))?.clone();
    let to = headers.iter().find_map(|h| match h {
        Header::To(to) => Some(to),
        _ => None,
    })?;
    if vias.is_empty() {
        return None;
    }
    // §8.2.6.2: a To without a tag gets one, the same for every retransmission of the
    // request, which a stateless responder gets by deriving it from the request.
    let to = match to.tag() {
        Ok(Some(_)) => to.clone(),
        _ => to.with_tag(rsip::param::Tag::new(to_tag(&config.node, headers))),
    };
    let status = if req.method == Method::Options { config.options_status } else { 501 };
    let mut out = vias;
    out.extend([
        from,
        Header::To(to),
        call_id,
        cseq,
        Header::Server(rsip::Server::new(crate::options::USER_AGENT)),
        Header::Other(NODE_HEADER.to_string(), config.node.clone()),
        Header::Allow(rsip::Allow::new("OPTIONS, ACK")),
        Header::ContentLength(rsip::ContentLength::new("0")),
    ]);
    let response = rsip::Response {
        status_code: StatusCode::from(status),
        wire_reason: None,
        version: rsip::Version::V2,
        headers: rsip::Headers(out),
        body: Vec::new(),
    };
    Some(response.to_bytes())
}

fn to_tag(node: &str, headers: &rsip::Headers) -> String {
    // DefaultHasher::new() uses fixed keys, so the tag is stable across calls.
    let mut h = std::hash::DefaultHasher::new();
    node.hash(&mut h);
    wire::header(headers, "Call-ID").hash(&mut h);
    wire::top_branch(headers).hash(&mut h);
    wire::header(headers, "CSeq").hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A bound responder, ready to [`run`](Responder::run).
pub struct Responder {
    udp: UdpSocket,
    udp_addr: SocketAddr,
    tcp: Option<(TcpListener, SocketAddr)>,
    config: Arc<ResponderConfig>,
}

impl Responder {
    /// Binds UDP on `udp` and, when given, TCP on `tcp` (usually the same address).
    pub async fn bind(udp: SocketAddr, tcp: Option<SocketAddr>, config: ResponderConfig) -> Result<Self, Error> {
        let socket =
            UdpSocket::bind(udp).await.map_err(|e| Error::io(format!("binding SIP responder on udp:{udp}"), e))?;
        let udp_addr = socket.local_addr().map_err(|e| Error::io(format!("reading address of udp:{udp}"), e))?;
        let tcp = match tcp {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::io(format!("binding SIP responder on tcp:{addr}"), e))?;
                let bound = l.local_addr().map_err(|e| Error::io(format!("reading address of tcp:{addr}"), e))?;
                Some((l, bound))
            }
            None => None,
        };
        Ok(Responder { udp: socket, udp_addr, tcp, config: Arc::new(config) })
    }

    /// The UDP address actually bound (useful after binding port 0).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The TCP address actually bound, if TCP is served.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|(_, a)| *a)
    }

    /// Serves until `shutdown` completes; open TCP connections are dropped then.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Responder { udp, udp_addr, tcp, config } = self;
        tracing::info!(%udp_addr, tcp = ?tcp.as_ref().map(|(_, a)| a), node = %config.node, "SIP responder listening");
        let listener = tcp.map(|(l, _)| l);
        let mut connections = JoinSet::new();
        let mut buf = vec![0u8; MAX_MESSAGE];
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                received = udp.recv_from(&mut buf) => {
                    let (len, source) = received.map_err(|e| Error::io(format!("receiving on udp:{udp_addr}"), e))?;
                    // Sent back to the packet's source, as RFC 3581 rport asks, which also
                    // reaches a client whose Via names an address we cannot route to.
                    if let Some(response) = respond(&buf[..len], &config) {
                        if let Err(e) = udp.send_to(&response, source).await {
                            tracing::warn!(%source, error = %e, "cannot send SIP response");
                        }
                    }
                }
                accepted = accept(listener.as_ref()) => match accepted {
                    Ok((stream, peer)) if connections.len() < MAX_TCP_CONNECTIONS => {
                        connections.spawn(serve_tcp(stream, peer, Arc::clone(&config)));
                    }
                    Ok((_, peer)) => tracing::warn!(%peer, "too many SIP TCP connections; closing this one"),
                    Err(e) => {
                        // EMFILE and friends: pause so a persistent error cannot spin.
                        tracing::warn!(error = %e, "accepting a SIP TCP connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn serve_tcp(mut stream: TcpStream, peer: SocketAddr, config: Arc<ResponderConfig>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match wire::next_frame(&buf) {
            Ok(Frame::Message { start, end }) => {
                if let Some(response) = respond(&buf[start..end], &config) {
                    if stream.write_all(&response).await.is_err() {
                        return;
                    }
                }
                buf.drain(..end);
            }
            Ok(Frame::Incomplete) => match tokio::time::timeout(TCP_IDLE, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            },
            Err(message) => {
                tracing::debug!(%peer, %message, "closing an unframeable SIP TCP stream");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &str = "OPTIONS sip:198.51.100.100 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.20:5070;branch=z9hG4bKr1;rport\r\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKr0\r\nf: <sip:p@198.51.100.20>;tag=ft\r\nt: <sip:198.51.100.100>\r\ni: call-r1\r\nCSeq: 7 OPTIONS\r\nl: 0\r\n\r\n";

    fn answer(request: &str, config: &ResponderConfig) -> Option<rsip::Response> {
        let bytes = respond(request.as_bytes(), config)?;
        match wire::parse(&bytes) {
            Some(SipMessage::Response(r)) => Some(r),
            other => panic!("responder sent something unparsable: {other:?}"),
        }
    }

    #[test]
    fn options_gets_the_configured_status_and_copies_the_transaction_headers() {
        let r = answer(OPTIONS, &ResponderConfig::new("a")).unwrap();
        assert_eq!(r.status_code.code(), 200);
        let h = r.headers();
        let vias: Vec<&str> = wire::header_values(h, "Via").collect();
        assert_eq!(
            vias,
            ["SIP/2.0/UDP 198.51.100.20:5070;branch=z9hG4bKr1;rport", "SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKr0"]
        );
        assert_eq!(wire::header(h, "From"), Some("<sip:p@198.51.100.20>;tag=ft"));
        assert_eq!(wire::header(h, "Call-ID"), Some("call-r1"));
        assert_eq!(wire::header(h, "CSeq"), Some("7 OPTIONS"));
        assert_eq!(wire::header(h, NODE_HEADER), Some("a"));
        let to = wire::header(h, "To").unwrap();
        assert!(to.starts_with("<sip:198.51.100.100>;tag="), "{to}");

        let sick = ResponderConfig { node: "b".into(), options_status: 503 };
        assert_eq!(answer(OPTIONS, &sick).unwrap().status_code.code(), 503);
    }

    #[test]
    fn the_to_tag_is_stable_for_a_retransmission_and_kept_when_present() {
        let cfg = ResponderConfig::new("a");
        assert_eq!(respond(OPTIONS.as_bytes(), &cfg), respond(OPTIONS.as_bytes(), &cfg));
        let tagged = OPTIONS.replace("t: <sip:198.51.100.100>", "t: <sip:198.51.100.100>;tag=mine");
        let r = answer(&tagged, &cfg).unwrap();
        assert_eq!(wire::header(r.headers(), "To"), Some("<sip:198.51.100.100>;tag=mine"));
    }

    #[test]
    fn other_methods_get_501_and_ack_gets_nothing() {
        let cfg = ResponderConfig::new("a");
        let invite = OPTIONS.replace("OPTIONS sip", "INVITE sip").replace("7 OPTIONS", "7 INVITE");
        assert_eq!(answer(&invite, &cfg).unwrap().status_code.code(), 501);
        let ack = OPTIONS.replace("OPTIONS sip", "ACK sip").replace("7 OPTIONS", "7 ACK");
        assert!(respond(ack.as_bytes(), &cfg).is_none());
    }

    #[test]
    fn garbage_responses_and_headerless_requests_get_nothing() {
        let cfg = ResponderConfig::new("a");
        assert!(respond(b"\x00\xff garbage", &cfg).is_none());
        assert!(respond(b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n", &cfg).is_none());
        let no_call_id = OPTIONS.replace("i: call-r1\r\n", "");
        assert!(respond(no_call_id.as_bytes(), &cfg).is_none());
    }
}
