//! A minimal Asterisk Manager Interface (AMI) client: log in, ask `CoreShowChannels`, count
//! the calls.
//!
//! The protocol (Asterisk's manager.c and its AMI docs): the server greets with one line,
//! `Asterisk Call Manager/<version>`; after that every message is `Key: Value` lines ended by
//! CRLF, closed by an empty line. Actions carry an `ActionID` that Asterisk copies into the
//! response and into every event of a list it produces; unrelated events can arrive in
//! between. `CoreShowChannels` answers `Response: Success` with `EventList: start`, then one
//! `CoreShowChannel` event per channel and a closing `CoreShowChannelsComplete` carrying
//! `ListItems`. A list that does not close, or whose `ListItems` disagrees with what arrived,
//! is an unknown count — never zero.
//!
//! [`ChannelList`] is the pure part (fed parsed [`Message`]s); [`active_calls`] does the I/O.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::pbx::Calls;

/// Asterisk's default manager port (manager.conf.sample, `port = 5038`).
pub const DEFAULT_PORT: u16 = 5038;
/// The greeting every AMI server sends first (manager.c: "Asterisk Call Manager/%s\r\n").
const BANNER: &str = "Asterisk Call Manager/";
/// Longer lines are not AMI: a wrong port or a hostile peer.
const MAX_LINE: u64 = 8 * 1024;
/// Headers in one message; a `CoreShowChannel` event has about twenty.
const MAX_HEADERS: usize = 256;
/// Messages read for one query, so a server flooding events cannot keep pbxha reading forever.
const MAX_MESSAGES: usize = 200_000;

/// Where and how to reach AMI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmiConfig {
    /// `host:port`, as `TcpStream::connect` takes it.
    pub addr: String,
    pub username: String,
    pub secret: String,
    /// For the whole query: connect, login, list.
    pub timeout: Duration,
}

/// One AMI message: its header lines in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    headers: Vec<(String, String)>,
}

impl Message {
    /// Parses one message's lines (without the closing empty line). Keys are kept as sent;
    /// [`Message::get`] compares them without case, as Asterisk does.
    pub fn parse(text: &str) -> Result<Message, String> {
        let mut headers = Vec::new();
        for line in text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()) {
            let Some((key, value)) = line.split_once(':') else {
                return Err(format!("`{line}` is not a `Key: Value` line"));
            };
            headers.push((key.trim().to_string(), value.trim().to_string()));
        }
        Ok(Message { headers })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    fn is(&self, key: &str, value: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case(value))
    }
}

/// Counts the answer to one `CoreShowChannels` action, message by message.
#[derive(Debug)]
pub struct ChannelList {
    action_id: String,
    channels: u32,
    /// A call's channels share a `Linkedid` (the oldest channel's Uniqueid, Asterisk 12+),
    /// so distinct Linkedids are calls; a channel without one counts on its own.
    calls: BTreeSet<String>,
}

impl ChannelList {
    pub fn new(action_id: impl Into<String>) -> Self {
        ChannelList { action_id: action_id.into(), channels: 0, calls: BTreeSet::new() }
    }

    /// Takes the next message; returns the count once the list is complete, or `Unknown` as
    /// soon as it cannot be trusted. Messages for other actions and plain events are ignored.
    pub fn feed(&mut self, msg: &Message) -> Option<Calls> {
        if msg.get("ActionID") != Some(self.action_id.as_str()) {
            return None;
        }
        if msg.get("Response").is_some() {
            if msg.is("Response", "Success") {
                return None;
            }
            let why = msg.get("Message").unwrap_or("no message");
            return Some(Calls::Unknown(format!("AMI refused CoreShowChannels: {why}")));
        }
        if msg.is("Event", "CoreShowChannel") {
            self.channels += 1;
            let call = msg
                .get("Linkedid")
                .filter(|id| !id.is_empty())
                .map_or_else(|| format!("channel #{}", self.channels), str::to_string);
            self.calls.insert(call);
            return None;
        }
        if msg.is("Event", "CoreShowChannelsComplete") {
            let items = msg.get("ListItems").and_then(|n| n.parse::<u32>().ok());
            return Some(match items {
                Some(n) if n == self.channels => Calls::Known(u32::try_from(self.calls.len()).unwrap_or(u32::MAX)),
                Some(n) => Calls::Unknown(format!("AMI list announced {n} channel(s) but {} arrived", self.channels)),
                None => Calls::Unknown("AMI list closed without a readable ListItems".into()),
            });
        }
        None
    }
}

/// Asks AMI at `config.addr` how many calls are up. Anything short of a complete, consistent
/// list within `config.timeout` is `Unknown`, with the reason.
pub async fn active_calls(config: &AmiConfig) -> Calls {
    match tokio::time::timeout(config.timeout, query(config)).await {
        Ok(Ok(calls)) => calls,
        Ok(Err(why)) => Calls::Unknown(format!("AMI {}: {why}", config.addr)),
        Err(_) => Calls::Unknown(format!("AMI {}: no complete answer within {:?}", config.addr, config.timeout)),
    }
}

async fn query(config: &AmiConfig) -> Result<Calls, String> {
    for (key, value) in [("username", &config.username), ("secret", &config.secret)] {
        // A line break would end the header early and let the rest be read as more headers.
        if value.contains(['\r', '\n']) {
            return Err(format!("the AMI {key} contains a line break"));
        }
    }
    let stream = TcpStream::connect(&config.addr).await.map_err(|e| format!("cannot connect: {e}"))?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let banner = read_line(&mut reader).await?.ok_or("closed the connection before its greeting")?;
    if !banner.starts_with(BANNER) {
        return Err(format!("greeted with `{}`, not `{BANNER}...`: is this AMI?", banner.trim()));
    }
    // One random tag per query, so answers to an earlier, abandoned query on a reused
    // connection (or another client's) can never be taken for ours.
    let tag: u32 = rand::random();
    let login_id = format!("pbxha-{tag:08x}-login");
    let list_id = format!("pbxha-{tag:08x}-channels");
    let login = format!(
        "Action: Login\r\nActionID: {login_id}\r\nUsername: {}\r\nSecret: {}\r\nEvents: off\r\n\r\n",
        config.username, config.secret
    );
    send(&mut write, &login).await?;
    let mut budget = MAX_MESSAGES;
    loop {
        let msg = next_message(&mut reader, &mut budget).await?;
        if msg.get("ActionID") == Some(login_id.as_str()) && msg.get("Response").is_some() {
            if msg.is("Response", "Success") {
                break;
            }
            return Err(format!(
                "login as `{}` refused: {}",
                config.username,
                msg.get("Message").unwrap_or("no message")
            ));
        }
    }
    send(&mut write, &format!("Action: CoreShowChannels\r\nActionID: {list_id}\r\n\r\n")).await?;
    let mut list = ChannelList::new(&list_id);
    let calls = loop {
        let msg = next_message(&mut reader, &mut budget).await?;
        if let Some(calls) = list.feed(&msg) {
            break calls;
        }
    };
    // Courtesy only: the answer is in hand, and dropping the socket ends the session anyway.
    let _ = write.write_all(b"Action: Logoff\r\n\r\n").await;
    Ok(calls)
}

async fn send(write: &mut (impl AsyncWriteExt + Unpin), text: &str) -> Result<(), String> {
    write.write_all(text.as_bytes()).await.map_err(|e| format!("cannot send: {e}"))
}

/// One line without its line ending; `None` at end of stream.
async fn read_line(reader: &mut (impl AsyncBufRead + Unpin)) -> Result<Option<String>, String> {
    let mut buf = Vec::new();
    let n = reader.take(MAX_LINE).read_until(b'\n', &mut buf).await.map_err(|e| format!("cannot read: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if n as u64 >= MAX_LINE {
            return Err(format!("sent a line longer than {MAX_LINE} bytes"));
        }
        // The peer closed in the middle of a line.
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&buf);
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

/// The next message, read up to its closing empty line.
async fn next_message(reader: &mut (impl AsyncBufRead + Unpin), budget: &mut usize) -> Result<Message, String> {
    *budget = budget.checked_sub(1).ok_or("sent too many messages without answering")?;
    let mut text = String::new();
    let mut lines = 0;
    loop {
        let Some(line) = read_line(reader).await? else {
            return Err("closed the connection before the answer was complete".into());
        };
        if line.is_empty() {
            if lines == 0 {
                continue;
            }
            return Message::parse(&text).map_err(|e| format!("sent a garbled message: {e}"));
        }
        lines += 1;
        if lines > MAX_HEADERS {
            return Err(format!("sent a message with more than {MAX_HEADERS} lines"));
        }
        text.push_str(&line);
        text.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn msg(text: &str) -> Message {
        Message::parse(text).unwrap()
    }

    // The CoreShowChannel and CoreShowChannelsComplete fields are those of Asterisk's AMI
    // event documentation (docs.asterisk.org, API_Documentation/AMI_Events/CoreShowChannel
    // and CoreShowChannelsComplete); the values are those of a two-leg call.
    const LIST_START: &str =
        "Response: Success\r\nActionID: {id}\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n";
    const CHANNEL_A: &str = "Event: CoreShowChannel\r\nActionID: {id}\r\nChannel: PJSIP/100-00000001\r\nChannelState: 6\r\nChannelStateDesc: Up\r\nCallerIDNum: 100\r\nCallerIDName: Alice\r\nConnectedLineNum: 200\r\nConnectedLineName: Bob\r\nLanguage: en\r\nAccountCode: \r\nContext: internal\r\nExten: 200\r\nPriority: 2\r\nUniqueid: 1700000000.1\r\nLinkedid: 1700000000.1\r\nBridgeId: 6b3e4f0a-2b1c-4d5e-9f00-000000000001\r\nApplication: Dial\r\nApplicationData: PJSIP/200,30\r\nDuration: 00:01:05\r\n\r\n";
    const CHANNEL_B: &str = "Event: CoreShowChannel\r\nActionID: {id}\r\nChannel: PJSIP/200-00000002\r\nChannelState: 6\r\nChannelStateDesc: Up\r\nCallerIDNum: 200\r\nCallerIDName: Bob\r\nConnectedLineNum: 100\r\nConnectedLineName: Alice\r\nLanguage: en\r\nAccountCode: \r\nContext: internal\r\nExten: \r\nPriority: 1\r\nUniqueid: 1700000000.2\r\nLinkedid: 1700000000.1\r\nBridgeId: 6b3e4f0a-2b1c-4d5e-9f00-000000000001\r\nApplication: AppDial\r\nApplicationData: (Outgoing Line)\r\nDuration: 00:01:04\r\n\r\n";
    const COMPLETE_2: &str =
        "Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: 2\r\n\r\n";
    /// An unrelated event, as AMI interleaves them (Newstate from the AMI event docs).
    const NEWSTATE: &str = "Event: Newstate\r\nPrivilege: call,all\r\nChannel: PJSIP/300-00000003\r\nChannelState: 5\r\nChannelStateDesc: Ringing\r\nUniqueid: 1700000000.3\r\nLinkedid: 1700000000.3\r\n\r\n";

    #[test]
    fn counts_a_two_leg_call_as_one_call() {
        let mut list = ChannelList::new("x");
        for part in [LIST_START, NEWSTATE, CHANNEL_A, CHANNEL_B] {
            assert_eq!(list.feed(&msg(&part.replace("{id}", "x"))), None);
        }
        assert_eq!(list.feed(&msg(&COMPLETE_2.replace("{id}", "x"))), Some(Calls::Known(1)));
    }

    #[test]
    fn an_empty_list_is_zero_calls() {
        let mut list = ChannelList::new("x");
        assert_eq!(list.feed(&msg(&LIST_START.replace("{id}", "x"))), None);
        let done = COMPLETE_2.replace("{id}", "x").replace("ListItems: 2", "ListItems: 0");
        assert_eq!(list.feed(&msg(&done)), Some(Calls::Known(0)));
    }

    #[test]
    fn a_list_that_disagrees_with_its_item_count_is_unknown() {
        let mut list = ChannelList::new("x");
        list.feed(&msg(&CHANNEL_A.replace("{id}", "x")));
        let out = list.feed(&msg(&COMPLETE_2.replace("{id}", "x")));
        assert!(
            matches!(out, Some(Calls::Unknown(ref why)) if why.contains("announced 2") && why.contains("1 arrived")),
            "{out:?}"
        );
    }

    #[test]
    fn other_action_ids_are_not_counted() {
        let mut list = ChannelList::new("mine");
        assert_eq!(list.feed(&msg(&CHANNEL_A.replace("{id}", "theirs"))), None);
        assert_eq!(list.feed(&msg(&COMPLETE_2.replace("{id}", "theirs"))), None);
        let empty = COMPLETE_2.replace("{id}", "mine").replace("ListItems: 2", "ListItems: 0");
        assert_eq!(list.feed(&msg(&empty)), Some(Calls::Known(0)));
    }

    #[test]
    fn an_error_response_is_unknown() {
        // manager.c answers an action the user may not run with this message.
        let mut list = ChannelList::new("x");
        let out = list.feed(&msg("Response: Error\r\nActionID: x\r\nMessage: Permission denied\r\n"));
        assert!(matches!(out, Some(Calls::Unknown(ref why)) if why.contains("Permission denied")), "{out:?}");
    }

    #[test]
    fn garbled_lines_do_not_parse() {
        assert!(Message::parse("Event CoreShowChannel\n").is_err());
        assert_eq!(msg("response: success\r\nactionid: 7\r\n").get("ActionID"), Some("7"));
    }

    /// What the fake server sends after a login: its reply, given the list's ActionID.
    type Script = fn(&str) -> String;

    /// A fake AMI server on 127.0.0.1:0 speaking the real framing. It checks the login, then
    /// answers the list action with `script`, then holds the connection open until the client
    /// leaves (so a missing Complete event shows as a timeout, as with a stuck Asterisk).
    async fn fake_ami(accept_login: bool, script: Script) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            let mut actions = Vec::new();
            // The banner of Asterisk 18+ (AMI version 5.0.x, manager.c AMI_VERSION).
            write.write_all(b"Asterisk Call Manager/5.0.1\r\n").await.unwrap();
            let mut budget = 10;
            while let Ok(m) = next_message(&mut reader, &mut budget).await {
                let action = m.get("Action").unwrap_or_default().to_string();
                let id = m.get("ActionID").unwrap_or_default().to_string();
                actions.push(action.clone());
                let reply = match action.as_str() {
                    "Login" if accept_login && m.get("Secret") == Some("s3cret") => {
                        // manager.c's answer, followed by the event it sends to new sessions.
                        format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\nEvent: FullyBooted\r\nPrivilege: system,all\r\nUptime: 1234\r\nLastReload: 1234\r\nStatus: Fully Booted\r\n\r\n")
                    }
                    "Login" => format!("Response: Error\r\nActionID: {id}\r\nMessage: Authentication failed\r\n\r\n"),
                    "CoreShowChannels" => script(&id),
                    _ => String::new(),
                };
                if write.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
            actions
        });
        (addr, task)
    }

    fn config(addr: String, timeout: Duration) -> AmiConfig {
        AmiConfig { addr, username: "pbxha".into(), secret: "s3cret".into(), timeout }
    }

    fn reply(id: &str, parts: &[&str]) -> String {
        parts.iter().map(|p| p.replace("{id}", id)).collect()
    }

    #[tokio::test]
    async fn counts_calls_through_interleaved_events() {
        let (addr, server) =
            fake_ami(true, |id| reply(id, &[LIST_START, CHANNEL_A, NEWSTATE, CHANNEL_B, NEWSTATE, COMPLETE_2])).await;
        assert_eq!(active_calls(&config(addr, Duration::from_secs(30))).await, Calls::Known(1));
        assert_eq!(server.await.unwrap(), ["Login", "CoreShowChannels", "Logoff"]);
    }

    #[tokio::test]
    async fn a_list_without_its_complete_event_is_unknown() {
        let (addr, _server) = fake_ami(true, |id| reply(id, &[LIST_START, CHANNEL_A])).await;
        let calls = active_calls(&config(addr, Duration::from_secs(2))).await;
        assert!(matches!(calls, Calls::Unknown(ref why) if why.contains("no complete answer")), "{calls:?}");
    }

    #[tokio::test]
    async fn answers_under_another_action_id_are_ignored() {
        let (addr, _server) = fake_ami(true, |_| reply("someone-else", &[LIST_START, CHANNEL_A, COMPLETE_2])).await;
        let calls = active_calls(&config(addr, Duration::from_secs(2))).await;
        assert!(matches!(calls, Calls::Unknown(_)), "a foreign list must never be our count: {calls:?}");
    }

    #[tokio::test]
    async fn a_refused_login_is_unknown_and_says_so() {
        let (addr, _server) = fake_ami(false, |_| String::new()).await;
        let calls = active_calls(&config(addr.clone(), Duration::from_secs(30))).await;
        assert!(
            matches!(calls, Calls::Unknown(ref why) if why.contains(&addr) && why.contains("Authentication failed")),
            "{calls:?}"
        );
    }

    #[tokio::test]
    async fn a_connection_closed_mid_list_is_unknown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            stream.write_all(b"Asterisk Call Manager/5.0.1\r\n").await.unwrap();
            let n = stream.read(&mut buf).await.unwrap();
            let login = Message::parse(&String::from_utf8_lossy(&buf[..n])).unwrap();
            let id = login.get("ActionID").unwrap().to_string();
            let ok = format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n");
            stream.write_all(ok.as_bytes()).await.unwrap();
            let _ = stream.read(&mut buf).await;
            stream.write_all(b"Response: Success\r\nActionID: ").await.unwrap();
        });
        let calls = active_calls(&config(addr, Duration::from_secs(30))).await;
        assert!(matches!(calls, Calls::Unknown(ref why) if why.contains("closed the connection")), "{calls:?}");
    }

    #[tokio::test]
    async fn a_peer_that_is_not_ami_is_unknown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            // What an SSH server greets with: a wrong ami-port.
            stream.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n").await.unwrap();
        });
        let calls = active_calls(&config(addr, Duration::from_secs(30))).await;
        assert!(matches!(calls, Calls::Unknown(ref why) if why.contains("is this AMI")), "{calls:?}");
    }

    #[tokio::test]
    async fn nobody_listening_is_unknown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let calls = active_calls(&config(addr, Duration::from_secs(30))).await;
        assert!(matches!(calls, Calls::Unknown(ref why) if why.contains("cannot connect")), "{calls:?}");
    }

    #[tokio::test]
    async fn credentials_with_line_breaks_are_refused_before_sending() {
        let mut cfg = config("127.0.0.1:1".into(), Duration::from_secs(5));
        cfg.secret = "x\r\nAction: Originate".into();
        let calls = active_calls(&cfg).await;
        assert!(matches!(calls, Calls::Unknown(ref why) if why.contains("line break")), "{calls:?}");
    }
}
