use super::*;

fn payload() -> Payload {
    Payload {
        answers: "cluster = \"pbx\"\n".into(),
        auth_key: "00ff".repeat(16) + "\n",
        secrets: vec![("/etc/pbxha/mysql-admin".into(), "s3cret\n".into())],
        peer: PeerFacts { mysql_server: Some("mariadbd  Ver 10.11.6-MariaDB".into()), ..PeerFacts::default() },
    }
}

/// A first node serving on loopback with an offer for cluster `pbx`; returns the offer's
/// path, its token and where it listens. The task ends with the test's runtime.
async fn first_node(dir: &Path, expiry: Duration) -> (PathBuf, String, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let at: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let path = dir.join(OFFER_NAME);
    let token = make_offer(&path, "pbx", at, expiry, payload()).unwrap();
    tokio::spawn(serve(path.clone(), std::future::pending(), |_| {}));
    for _ in 0..50 {
        if TcpStream::connect(at).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (path, token, at)
}

fn line(e: Error) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "one line: {s}");
    s
}

#[tokio::test]
async fn the_right_token_carries_the_payload_once() {
    let dir = tempfile::tempdir().unwrap();
    let (path, token, at) = first_node(dir.path(), DEFAULT_EXPIRY).await;
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let (cluster, got) = fetch(at, &normalize(&token.to_lowercase()).unwrap()).await.unwrap();
    assert_eq!((cluster.as_str(), got), ("pbx", payload()));
    assert!(!path.exists(), "the offer is burnt once used");
    tokio::time::sleep(OFFER_POLL * 2).await;
    let again = line(fetch(at, &normalize(&token).unwrap()).await.unwrap_err());
    assert!(again.contains("nothing offers a join") && again.contains("--new-token"), "{again}");
}

#[tokio::test]
async fn a_wrong_token_is_one_guess_and_burns_the_offer() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _token, at) = first_node(dir.path(), DEFAULT_EXPIRY).await;
    let wrong = normalize(&new_token("pbx")).unwrap();
    let e = line(fetch(at, &wrong).await.unwrap_err());
    assert!(e.contains("refused the token") && e.contains("burnt"), "{e}");
    assert!(!path.exists());
}

#[tokio::test]
async fn a_token_of_another_cluster_is_refused_before_any_guess() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _token, at) = first_node(dir.path(), DEFAULT_EXPIRY).await;
    let other = normalize(&new_token("other")).unwrap();
    // The check character catches it with probability 30/31; a token that passes it by
    // chance still fails the exchange, whose identities name the cluster.
    match made_for(&other, "pbx") {
        false => {
            let e = line(fetch(at, &other).await.unwrap_err());
            assert!(e.contains("not made for cluster `pbx`"), "{e}");
            assert!(path.exists(), "no guess was made: the offer stays");
        }
        true => assert!(fetch(at, &other).await.is_err()),
    }
}

#[tokio::test]
async fn an_expired_offer_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let (path, token, at) = first_node(dir.path(), Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = line(fetch(at, &normalize(&token).unwrap()).await.unwrap_err());
    assert!(e.contains("nothing offers a join"), "{e}");
    assert!(!path.exists(), "an expired offer is removed");
}

#[test]
fn identities_bind_the_cluster() {
    let pw = Password::new(b"K7QF2M9XPD4C");
    let (ja, fa) = identities("pbx");
    let (jb, fb) = identities("other");
    let (a, ma) = Spake2::<Ed25519Group>::start_a(&pw, &ja, &fa);
    let (b, mb) = Spake2::<Ed25519Group>::start_b(&pw, &jb, &fb);
    assert_ne!(a.finish(&mb).unwrap(), b.finish(&ma).unwrap(), "same token, other cluster: no shared key");
}

#[test]
fn tokens_are_short_unambiguous_and_checked() {
    let t = new_token("pbx");
    assert_eq!(t.len(), 14);
    assert_eq!(t.matches('-').count(), 2);
    let n = normalize(&t).unwrap();
    assert!(made_for(&n, "pbx"));
    assert_ne!(new_token("pbx"), t);
    for bad in ["K7QF-2M9X-PD4", "K7QF-2M9X-PD40", "K7QF-2M9X-PD4I"] {
        assert!(normalize(bad).is_err(), "{bad}");
    }
}
