//! The config's fingerprint: one SHA-256 per section of the settings both nodes must share,
//! so that `pbxha drill` can say which sections differ between the two daemons rather than
//! only that they do.
//!
//! A section is a top-level table (`cluster`, `ping`, ...) or one element of an array of
//! tables named by its `name` (`resource.sip`, `link.hb`). `[paths]` and `[http]` are left
//! out: they name this node's own files and address. So are the keys in [`NODE_LOCAL_KEYS`],
//! which each node sets for itself (the paths of its key and password files: the heartbeat's
//! authentication already proves the same key; its MySQL server-id, seed flag and
//! addresses, which the drill's replication row checks). Each section has two hashes: of its
//! text as it is, and with every string equal to this node's own name replaced by a
//! placeholder. A section is the same on both nodes when either pair agrees, so a setting
//! naming the node it runs on (`--node a` on a, `--node b` on b) is the same setting, and so
//! is one naming a node for both (`preferred-node = "a"`); the price is that a setting
//! naming, on each node, that node itself (`preferred-node = "a"` on a, `"b"` on b) passes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Sections that belong to one node and may differ.
const NODE_LOCAL: [&str; 2] = ["paths", "http"];

/// Keys of a shared section that each node sets for itself, as `pbxha install` writes them.
const NODE_LOCAL_KEYS: [(&str, &str); 9] = [
    ("cluster", "auth-key-file"),
    ("mysql", "admin-password-file"),
    ("mail", "password-file"),
    ("mail", "ca-file"),
    ("mysql", "server-id"),
    ("mysql", "seed"),
    ("mysql", "local"),
    ("mysql", "peer"),
    ("mysql", "conf-dir"),
];

/// What stands for this node's name in the hashed text.
const SELF_NAME: &str = "\u{0}this-node";

/// Section name → its two hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint(pub BTreeMap<String, Hashes>);

/// Hex SHA-256 of a section's canonical JSON, as it is and with the node's own name masked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashes {
    pub raw: String,
    pub masked: String,
}

impl Hashes {
    fn of(value: toml::Value, local: &str) -> Hashes {
        Hashes { raw: digest(&value), masked: digest(&masked(value, local)) }
    }

    fn agree(&self, other: &Hashes) -> bool {
        self.raw == other.raw || self.masked == other.masked
    }
}

impl Fingerprint {
    /// The fingerprint of config text as loaded by the node named `local`; unparsable text
    /// has the empty fingerprint (the daemon only runs on text that parsed).
    pub fn of(text: &str, local: &str) -> Fingerprint {
        let Ok(root) = text.parse::<toml::Table>() else {
            return Fingerprint::default();
        };
        let mut sections = BTreeMap::new();
        for (key, value) in root {
            if NODE_LOCAL.contains(&key.as_str()) {
                continue;
            }
            match value {
                toml::Value::Array(items) if items.iter().all(|i| i.get("name").is_some_and(|n| n.is_str())) => {
                    for item in items {
                        let name = item.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
                        sections.insert(format!("{key}.{name}"), Hashes::of(item, local));
                    }
                }
                toml::Value::Table(mut table) => {
                    for (_, local_key) in NODE_LOCAL_KEYS.iter().filter(|(section, _)| *section == key) {
                        table.remove(*local_key);
                    }
                    sections.insert(key, Hashes::of(toml::Value::Table(table), local));
                }
                other => {
                    sections.insert(key, Hashes::of(other, local));
                }
            }
        }
        Fingerprint(sections)
    }

    /// The sections that differ from `other`'s (present on one side only, or with another
    /// hash), in order; empty when the two are identical.
    pub fn differences(&self, other: &Fingerprint) -> Vec<String> {
        let mut names: Vec<&String> = self.0.keys().chain(other.0.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter(|n| match (self.0.get(*n), other.0.get(*n)) {
                (Some(mine), Some(theirs)) => !mine.agree(theirs),
                _ => true,
            })
            .cloned()
            .collect()
    }
}

fn digest(value: &toml::Value) -> String {
    // toml's tables are sorted maps, so equal settings give equal text.
    let canonical = serde_json::to_string(value).unwrap_or_default();
    Sha256::digest(canonical.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `value` with every string equal to `local` replaced by [`SELF_NAME`].
fn masked(value: toml::Value, local: &str) -> toml::Value {
    match value {
        toml::Value::String(s) if s == local => toml::Value::String(SELF_NAME.into()),
        toml::Value::Array(items) => toml::Value::Array(items.into_iter().map(|v| masked(v, local)).collect()),
        toml::Value::Table(t) => toml::Value::Table(t.into_iter().map(|(k, v)| (k, masked(v, local))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"
[cluster]
name = "c"
preferred-node = "a"
[[resource]]
name = "sip"
exec = ["responder", "--node", "a"]
[[resource]]
name = "vip"
address = "198.51.100.10/24"
[paths]
state-db = "/tmp/a.db"
"#;

    #[test]
    fn the_nodes_own_name_and_files_do_not_count() {
        let b = A.replace("\"a\"]", "\"b\"]").replace("a.db", "b.db");
        assert_ne!(A, b);
        assert_eq!(Fingerprint::of(A, "a").differences(&Fingerprint::of(&b, "b")), Vec::<String>::new());
        // preferred-node = "a" is the same on both though masked only on a.
        let fa = Fingerprint::of(A, "a");
        assert!(fa.0.contains_key("resource.sip") && fa.0.contains_key("cluster") && !fa.0.contains_key("paths"));
    }

    #[test]
    fn the_keys_each_node_sets_for_itself_do_not_count() {
        let on = |key: &str, id: u8, seed: bool, local: &str, peer: &str| {
            format!(
                "[cluster]\nname = \"c\"\nauth-key-file = \"{key}/authkey\"\n[mysql]\nmode = \"master-master\"\n\
                 admin-password-file = \"{key}/mysql-admin\"\n\
                 server-id = {id}\nseed = {seed}\nlocal = {{ host = \"{local}\" }}\npeer = {{ host = \"{peer}\" }}\n"
            )
        };
        let a = on("/a-root/etc/pbxha", 1, true, "203.0.113.11", "203.0.113.12");
        let b = on("/b-root/etc/pbxha", 2, false, "203.0.113.12", "203.0.113.11");
        assert_eq!(Fingerprint::of(&a, "a").differences(&Fingerprint::of(&b, "b")), Vec::<String>::new());
        let replica = b.replace("master-master", "replica");
        assert_eq!(Fingerprint::of(&a, "a").differences(&Fingerprint::of(&replica, "b")), ["mysql"]);
    }

    #[test]
    fn differences_name_the_sections() {
        let b = A.replace("198.51.100.10", "198.51.100.11").replace("name = \"c\"", "name = \"c\"\nid = 2");
        assert_eq!(Fingerprint::of(A, "a").differences(&Fingerprint::of(&b, "a")), ["cluster", "resource.vip"]);
        let fewer = A.replace("[[resource]]\nname = \"vip\"\naddress = \"198.51.100.10/24\"\n", "");
        assert_eq!(Fingerprint::of(A, "a").differences(&Fingerprint::of(&fewer, "a")), ["resource.vip"]);
    }
}
