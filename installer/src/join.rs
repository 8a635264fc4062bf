//! The second node's join: a one-time token the first node prints, and the exchange that
//! carries the cluster's key and answers to the joining node over the heartbeat link.
//!
//! The first node keeps an *offer* (the token, its expiry, where to listen and the
//! [`Payload`]) in a 0600 file beside its state database. Its daemon runs [`serve`], which
//! listens on TCP at the heartbeat address only while an unexpired offer exists. The joining
//! node runs [`fetch`]:
//!
//! 1. the first node says which cluster it is (in clear: the name is no secret);
//! 2. the joining node checks the token's check character against that name (a token of
//!    another cluster, or a typo, stops here and burns nothing) and sends its SPAKE2 message
//!    (Ed25519 group, the token as the password, identities naming the cluster and the side);
//! 3. the first node burns the offer the moment that message arrives, whatever follows;
//! 4. each side proves it holds the shared key (an HMAC of a label under it), the first node
//!    first; nothing secret is sent before both proofs are checked;
//! 5. the payload goes sealed with ChaCha20-Poly1305 under a key derived from the shared one.
//!
//! Someone who only watches sees two SPAKE2 messages, two proofs and a ciphertext, none of
//! which lets a guess at the token be checked offline; someone who talks to either side gets
//! one online guess, after which the offer is gone.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, Result};

/// Letters and digits a person cannot confuse (no 0/O, 1/I/L).
const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Random characters in a token; one check character follows them.
const RANDOM_CHARS: usize = 11;
/// How long a token stays valid unless `--token-expiry` says otherwise.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(30 * 60);
/// The offer file, in the directory of the state database.
pub const OFFER_NAME: &str = "join-offer.json";
/// Held by the first node while one join runs, and by `--new-token` while it writes.
pub const LOCK_NAME: &str = "join.lock";
/// Where the offer lives below the root.
pub const OFFER_PATH: &str = "/var/lib/pbxha/join-offer.json";
/// Each read or write of the exchange: a person is not typing here, the machines are.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames are a few kilobytes (answers, a key, password files).
const MAX_FRAME: usize = 1 << 20;

/// What the first node tells the joining one about itself, for the joining node's preflight.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerFacts {
    pub pbx_version: Option<String>,
    pub mysql_server: Option<String>,
    /// The DRBD backing device's size in bytes, when storage is DRBD.
    pub drbd_bytes: Option<u64>,
}

/// What crosses the link sealed: everything the joining node needs to install its side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The first node's answers.toml as saved by its install.
    pub answers: String,
    /// The heartbeat key file's contents.
    pub auth_key: String,
    /// The secret files the answers name (MySQL admin password, mail password), by the path
    /// the answers give.
    pub secrets: Vec<(PathBuf, String)>,
    pub peer: PeerFacts,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Offer {
    token: String,
    /// Unix seconds.
    expires: u64,
    listen: SocketAddr,
    cluster: String,
    payload: Payload,
}

/// The first node's opening line, in clear.
#[derive(Debug, Serialize, Deserialize)]
enum Hello {
    Cluster(String),
    Refused(String),
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn check_char(cluster: &str, random: &str) -> u8 {
    let digest = Sha256::new().chain_update(cluster.as_bytes()).chain_update([0]).chain_update(random).finalize();
    ALPHABET[usize::from(digest[0]) % ALPHABET.len()]
}

/// A fresh token for `cluster`, as printed: `XXXX-XXXX-XXXX`.
pub fn new_token(cluster: &str) -> String {
    let mut rng = rand::rngs::OsRng;
    let random: String = (0..RANDOM_CHARS).map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])).collect();
    let mut all = random.clone();
    all.push(char::from(check_char(cluster, &random)));
    format!("{}-{}-{}", &all[0..4], &all[4..8], &all[8..12])
}

/// The token as typed, reduced to its twelve characters (case, dashes and spaces ignored).
pub fn normalize(typed: &str) -> Result<String> {
    let t: String = typed.chars().filter(|c| !matches!(c, '-' | ' ')).map(|c| c.to_ascii_uppercase()).collect();
    match t.len() == RANDOM_CHARS + 1 && t.bytes().all(|b| ALPHABET.contains(&b)) {
        true => Ok(t),
        false => Err(Error::Join(format!(
            "`{typed}` is not a join token: it has 12 letters and digits as XXXX-XXXX-XXXX (no 0, 1, I, L or O)"
        ))),
    }
}

/// Whether a normalized token was made for `cluster`.
fn made_for(token: &str, cluster: &str) -> bool {
    token.as_bytes()[RANDOM_CHARS] == check_char(cluster, &token[..RANDOM_CHARS])
}

fn identities(cluster: &str) -> (Identity, Identity) {
    (
        Identity::new(format!("pbxha join {cluster}: joining node").as_bytes()),
        Identity::new(format!("pbxha join {cluster}: first node").as_bytes()),
    )
}

/// (the first node's proof, the joining node's proof, the payload key) from the shared key.
fn derive(shared: &[u8]) -> ([u8; 32], [u8; 32], [u8; 32]) {
    let label = |l: &str| -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(shared).expect("HMAC takes a key of any length");
        mac.update(l.as_bytes());
        mac.finalize().into_bytes().into()
    };
    (label("first node confirms"), label("joining node confirms"), label("payload key"))
}

/// Constant-time comparison, as a MAC check must be.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn send(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("frame too long"))?;
    let write = async {
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    tokio::time::timeout(STEP_TIMEOUT, write).await.map_err(|_| std::io::ErrorKind::TimedOut)?
}

async fn receive(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let read = async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::other(format!("a frame of {len} bytes")));
        }
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    };
    tokio::time::timeout(STEP_TIMEOUT, read).await.map_err(|_| std::io::ErrorKind::TimedOut)?
}

fn seal(key: &[u8; 32], plain: &[u8]) -> Vec<u8> {
    // The key is used for this one message only, so a fixed nonce never repeats under it.
    ChaCha20Poly1305::new(Key::from_slice(key)).encrypt(Nonce::from_slice(&[0; 12]), plain).unwrap_or_default()
}

fn open(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    ChaCha20Poly1305::new(Key::from_slice(key)).decrypt(Nonce::from_slice(&[0; 12]), sealed).ok()
}

/// Writes a new offer (replacing any older one) and returns its token.
pub fn make_offer(
    offer_path: &Path,
    cluster: &str,
    listen: SocketAddr,
    expiry: Duration,
    payload: Payload,
) -> Result<String> {
    let dir = offer_path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
    let _lock = crate::journal::Lock::take_named(&dir.join(LOCK_NAME), "a join is running on this node")?;
    let token = new_token(cluster);
    let offer = Offer {
        token: normalize(&token)?,
        expires: now_secs() + expiry.as_secs(),
        listen,
        cluster: cluster.to_string(),
        payload,
    };
    let text = serde_json::to_vec(&offer).map_err(|e| Error::file(offer_path, e))?;
    crate::apply::write_atomic(offer_path, &text, 0o600)?;
    Ok(token)
}

/// The offer on disk if it is still good; an expired one is removed.
fn current_offer(path: &Path) -> Option<Offer> {
    let offer: Offer = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    if offer.expires <= now_secs() {
        let _ = std::fs::remove_file(path);
        return None;
    }
    Some(offer)
}

/// How often the daemon looks for a new offer, and for the end of the current one.
const OFFER_POLL: Duration = Duration::from_secs(1);

/// The first node's side, run by its daemon until `stop`: listens while an unexpired offer
/// exists, and serves one joining node at a time. `log` gets one line per attempt.
pub async fn serve(offer_path: PathBuf, stop: impl Future<Output = ()>, log: impl Fn(&str)) {
    tokio::pin!(stop);
    let mut listening: Option<(SocketAddr, TcpListener)> = None;
    let mut bind_failed: Option<SocketAddr> = None;
    loop {
        let offer = current_offer(&offer_path);
        match (&offer, &listening) {
            (None, _) => listening = None,
            (Some(o), Some((at, _))) if *at == o.listen => {}
            (Some(o), _) => {
                listening = match TcpListener::bind(o.listen).await {
                    Ok(l) => {
                        log(&format!("join offered on {} until the token expires or is used", o.listen));
                        Some((o.listen, l))
                    }
                    Err(e) => {
                        if bind_failed != Some(o.listen) {
                            log(&format!("cannot offer the join on {}: {e}", o.listen));
                            bind_failed = Some(o.listen);
                        }
                        None
                    }
                }
            }
        }
        let accepted = async {
            match &listening {
                Some((_, l)) => l.accept().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut stop => return,
            conn = accepted => if let Some((stream, from)) = conn {
                let line = match answer(&offer_path, stream).await {
                    Ok(()) => format!("join from {from}: the cluster's key and answers were sent"),
                    Err(e) => format!("join from {from} refused: {e}"),
                };
                log(&line);
            },
            () = tokio::time::sleep(OFFER_POLL) => {}
        }
    }
}

/// One joining node, from the first node's side.
async fn answer(offer_path: &Path, mut stream: TcpStream) -> std::result::Result<(), String> {
    let dir = offer_path.parent().unwrap_or(Path::new("/"));
    let refuse = |why: &str| serde_json::to_vec(&Hello::Refused(why.to_string())).unwrap_or_default();
    let _lock = match crate::journal::Lock::take_named(&dir.join(LOCK_NAME), "a join is running on this node") {
        Ok(l) => l,
        Err(_) => {
            let _ =
                send(&mut stream, &refuse("another join is running on the first node; try again when it ends")).await;
            return Err("another join was running".into());
        }
    };
    let Some(offer) = current_offer(offer_path) else {
        let _ = send(
            &mut stream,
            &refuse("the token expired or was used; run `pbxha install --new-token` on the first node"),
        )
        .await;
        return Err("no unexpired, unused token".into());
    };
    let hello = serde_json::to_vec(&Hello::Cluster(offer.cluster.clone())).map_err(|e| e.to_string())?;
    send(&mut stream, &hello).await.map_err(|e| format!("sending the hello: {e}"))?;
    let theirs = receive(&mut stream).await.map_err(|e| format!("no key exchange message: {e}"))?;
    // One guess per token: it is burnt before the guess is even checked.
    std::fs::remove_file(offer_path).map_err(|e| format!("cannot burn the token: {e}"))?;
    let (joining, first) = identities(&offer.cluster);
    let (spake, ours) = Spake2::<Ed25519Group>::start_b(&Password::new(offer.token.as_bytes()), &joining, &first);
    send(&mut stream, &ours).await.map_err(|e| format!("sending the key exchange message: {e}"))?;
    let shared = spake.finish(&theirs).map_err(|e| format!("the key exchange failed ({e:?}); the token is burnt"))?;
    let (first_proof, joining_proof, key) = derive(&shared);
    send(&mut stream, &first_proof).await.map_err(|e| format!("sending the proof: {e}"))?;
    let proof = receive(&mut stream)
        .await
        .map_err(|_| "the joining node did not prove the key (a wrong token?); the token is burnt".to_string())?;
    if !same(&proof, &joining_proof) {
        return Err("the joining node's proof is wrong (a wrong token); the token is burnt".into());
    }
    let plain = serde_json::to_vec(&offer.payload).map_err(|e| e.to_string())?;
    send(&mut stream, &seal(&key, &plain)).await.map_err(|e| format!("sending the payload: {e}"))
}

/// Where `--join` points: an address, or an address and port.
pub fn join_address(text: &str, default_port: u16) -> Result<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    text.parse().map_err(|_| {
        Error::Join(format!("`{text}` is not an address: give the first node's heartbeat address as it printed it"))
    })
}

/// How long the joining node waits for the first node to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The joining node's side: the cluster's name and the payload, or the one line that says
/// why not. Writes nothing anywhere.
pub async fn fetch(at: SocketAddr, typed: &str) -> Result<(String, Payload)> {
    let token = normalize(typed)?;
    let token = token.as_str();
    let j = |s: String| Error::Join(s);
    let nobody = |why: &str| {
        j(format!(
            "nothing offers a join at {at} ({why}): the first node's daemon is stopped, or it holds no unused, unexpired token; \
             run `pbxha install --new-token` there and type the line it prints"
        ))
    };
    let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(at)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(nobody("connection refused")),
        Ok(Err(e)) => return Err(j(format!("cannot reach the first node at {at}: {e}; check the address and the heartbeat link"))),
        Err(_) => return Err(j(format!("the first node at {at} did not answer within {CONNECT_TIMEOUT:?}; check the address and the heartbeat link"))),
    };
    let ended = |what: &str| j(format!("the first node at {at} ended the join {what}; its log says why"));
    let hello = receive(&mut stream).await.map_err(|_| nobody("it closed the connection"))?;
    let cluster = match serde_json::from_slice(&hello) {
        Ok(Hello::Cluster(c)) => c,
        Ok(Hello::Refused(why)) => return Err(j(format!("the first node at {at} refused the join: {why}"))),
        Err(_) => return Err(j(format!("{at} is not a pbxha node offering a join"))),
    };
    if !made_for(token, &cluster) {
        return Err(j(format!(
            "this token was not made for cluster `{cluster}` at {at} (or it is mistyped); nothing was sent, the token is still good"
        )));
    }
    let (joining, first) = identities(&cluster);
    let (spake, ours) = Spake2::<Ed25519Group>::start_a(&Password::new(token.as_bytes()), &joining, &first);
    send(&mut stream, &ours).await.map_err(|_| ended("before the key exchange"))?;
    let theirs = receive(&mut stream).await.map_err(|_| ended("during the key exchange"))?;
    let wrong = || {
        j(format!(
            "the first node at {at} refused the token: it is wrong (mistyped, or made for another cluster) and is now burnt; \
             run `pbxha install --new-token` there and type the new line"
        ))
    };
    let shared = spake.finish(&theirs).map_err(|_| wrong())?;
    let (first_proof, joining_proof, key) = derive(&shared);
    let proof = receive(&mut stream).await.map_err(|_| ended("during the key exchange"))?;
    if !same(&proof, &first_proof) {
        return Err(wrong());
    }
    send(&mut stream, &joining_proof).await.map_err(|_| ended("after the key exchange"))?;
    let sealed = receive(&mut stream).await.map_err(|_| ended("before sending the cluster's files"))?;
    let plain = open(&key, &sealed).ok_or_else(|| j(format!("the payload from {at} does not decrypt")))?;
    let payload = serde_json::from_slice(&plain).map_err(|e| j(format!("the payload from {at} is unreadable: {e}")))?;
    Ok((cluster, payload))
}

#[cfg(test)]
mod tests;
