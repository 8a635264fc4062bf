use super::*;

/// Asterisk's sample pjsip.conf transports (configs/samples/pjsip.conf.sample), shortened.
const PJSIP: &str = "; PJSIP Configuration\n[transport-udp]\ntype=transport\nprotocol=udp    ;udp,tcp,tls,ws,wss,flow\nbind=0.0.0.0\n\n[transport-tcp]\ntype = transport\nprotocol = tcp\nbind = 0.0.0.0:5060\n\n[6001]\ntype=endpoint\nbind=keep-me\n";

#[test]
fn asterisk_transports_bind_the_vip_and_nothing_else_changes() {
    let out = pjsip_bind(PJSIP, "192.168.0.105");
    assert!(
        out.contains("[transport-udp]\ntype=transport\nprotocol=udp    ;udp,tcp,tls,ws,wss,flow\nbind=192.168.0.105\n"),
        "{out}"
    );
    assert!(out.contains("bind = 192.168.0.105:5060\n"), "{out}");
    assert!(out.contains("[6001]\ntype=endpoint\nbind=keep-me\n"), "{out}");
    assert_eq!(pjsip_bind(&out, "192.168.0.105"), out, "a second run changes nothing");
    let sip = "[general]\ncontext=default\nbindaddr=0.0.0.0\n[other]\nbindaddr=1.2.3.4\n";
    assert_eq!(
        chan_sip_bind(sip, "192.168.0.105"),
        "[general]\ncontext=default\nbindaddr=192.168.0.105\n[other]\nbindaddr=1.2.3.4\n"
    );
}

#[test]
fn freeswitch_profiles_get_sip_ip_and_rtp_ip() {
    // FreeSWITCH's vanilla conf/sip_profiles/internal.xml lines.
    let xml = "    <param name=\"rtp-ip\" value=\"$${local_ip_v4}\"/>\n    <param name=\"sip-ip\" value=\"$${local_ip_v4}\"/>\n    <param name=\"sip-port\" value=\"$${internal_sip_port}\"/>\n    <!-- <param name=\"sip-ip\" value=\"x\"/> -->\n";
    let out = sofia_bind(xml, "192.168.0.105");
    assert_eq!(
        out,
        "    <param name=\"rtp-ip\" value=\"192.168.0.105\"/>\n    <param name=\"sip-ip\" value=\"192.168.0.105\"/>\n    <param name=\"sip-port\" value=\"$${internal_sip_port}\"/>\n    <!-- <param name=\"sip-ip\" value=\"x\"/> -->\n"
    );
}

#[test]
fn diffs_show_changed_lines_with_context() {
    let d = diff("a\nb\nc\nd\ne\nf\ng\n", "a\nb\nc\nD\ne\nf\ng\n");
    assert_eq!(d, "  ...\n   b\n   c\n  -d\n  +D\n   e\n   f\n  ...\n");
    assert_eq!(diff("", "x\n"), "  +x\n");
}

#[test]
fn paths_below_a_root() {
    assert_eq!(at(Path::new("/"), "/etc/pbxha/authkey"), "/etc/pbxha/authkey");
    assert_eq!(at(Path::new("/tmp/r"), "/etc/pbxha/authkey"), "/tmp/r/etc/pbxha/authkey");
    assert!(unit(Path::new("/tmp/r")).contains("ExecStart=/usr/sbin/pbxha --config /tmp/r/etc/pbxha/pbxha.toml run"));
    assert_eq!(unit(Path::new("/")), include_str!("../../../packaging/pbxha.service"));
}
