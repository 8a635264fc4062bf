//! [`Reader`]: one TOML table being read by key, remembering which keys were asked for.
//!
//! Every getter records what is wrong with a key in the shared [`Problems`] and returns `None`
//! (or the default), so a reader goes on and reports everything in one run. `opt_*` getters
//! accept an absent key; the plain ones report it as missing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use toml::{Table, Value};

use crate::{edit_distance, parse_duration, Cidr, Problem, Problems};

/// A table already read to the end: nothing left to report.
static EMPTY: OnceLock<Table> = OnceLock::new();

fn empty() -> &'static Table {
    EMPTY.get_or_init(Table::new)
}

/// One table being read at a key path such as `link[1]` (empty for a file's root).
pub struct Reader<'a> {
    path: String,
    table: &'a Table,
    asked: Vec<&'static str>,
    problems: &'a Problems,
}

impl<'a> Reader<'a> {
    pub fn new(path: impl Into<String>, table: &'a Table, problems: &'a Problems) -> Self {
        Reader { path: path.into(), table, asked: Vec::new(), problems }
    }

    /// A file's top-level table.
    pub fn root(table: &'a Table, problems: &'a Problems) -> Self {
        Self::new("", table, problems)
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full path of `key` in this table.
    pub fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Records a problem at `key` of this table; `None` so it can stand as a value.
    pub fn problem<T>(&self, key: &str, message: String, hint: Option<&str>) -> Option<T> {
        self.problem_at(self.key(key), message, hint)
    }

    /// Records a problem at a full key path (`ping.targets[2]`).
    pub fn problem_at<T>(&self, key: String, message: String, hint: Option<&str>) -> Option<T> {
        self.problems.push(Problem { key, message, hint: hint.map(str::to_string) });
        None
    }

    /// Adopts the problems of a section another reader went through; their paths are full.
    pub fn adopt(&self, problems: impl IntoIterator<Item = Problem>) {
        self.problems.extend(problems);
    }

    /// Whether the table holds `key`, without asking for it.
    pub fn contains(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// The raw value of `key`, which is now a known key.
    pub fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        if !self.asked.contains(&key) {
            self.asked.push(key);
        }
        self.table.get(key)
    }

    /// Whether a required `key` is there; an absent one is reported missing (with `hint`)
    /// and is still a known key.
    pub fn required(&mut self, key: &'static str, hint: Option<&str>) -> bool {
        let present = self.table.contains_key(key);
        if !present {
            self.asked.push(key);
            self.missing::<()>(key, hint);
        }
        present
    }

    pub fn missing<T>(&self, key: &str, hint: Option<&str>) -> Option<T> {
        self.problem(key, "missing required key".into(), hint)
    }

    pub fn wrong<T>(&self, key: &str, expected: &str, found: &Value) -> Option<T> {
        self.problem(key, format!("expected {expected}, found {}", found.type_str()), None)
    }

    /// A non-empty string.
    pub fn opt_string(&mut self, key: &'static str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::String(_) => self.problem(key, "must not be empty".into(), None),
            other => self.wrong(key, "a string", other),
        }
    }

    pub fn string(&mut self, key: &'static str) -> Option<String> {
        match self.required(key, None) {
            true => self.opt_string(key),
            false => None,
        }
    }

    /// A string converted by `parse`, whose error message is reported with `hint`.
    pub fn opt_string_as<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        hint: Option<&str>,
    ) -> Option<T> {
        let text = self.opt_string(key)?;
        parse(&text).map_or_else(|m| self.problem(key, m, hint), Some)
    }

    pub fn string_as<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        hint: Option<&str>,
    ) -> Option<T> {
        match self.required(key, None) {
            true => self.opt_string_as(key, parse, hint),
            false => None,
        }
    }

    pub fn opt_path(&mut self, key: &'static str) -> Option<PathBuf> {
        self.opt_string(key).map(PathBuf::from)
    }

    pub fn path_or(&mut self, key: &'static str, default: &str) -> PathBuf {
        self.opt_path(key).unwrap_or_else(|| PathBuf::from(default))
    }

    /// An address with its prefix (a bare address is a host).
    pub fn cidr(&mut self, key: &'static str, hint: &str) -> Option<Cidr> {
        self.string_as(key, str::parse, Some(hint))
    }

    pub fn opt_bool(&mut self, key: &'static str) -> Option<bool> {
        match self.get(key)? {
            Value::Boolean(b) => Some(*b),
            other => self.wrong(key, "true or false", other),
        }
    }

    pub fn bool_or(&mut self, key: &'static str, default: bool) -> bool {
        self.opt_bool(key).unwrap_or(default)
    }

    /// An integer in `min..=max`.
    pub fn opt_int<T: TryFrom<i64>>(&mut self, key: &'static str, min: i64, max: i64) -> Option<T> {
        match self.get(key)? {
            Value::Integer(i) if (min..=max).contains(i) => T::try_from(*i).ok(),
            Value::Integer(i) => self.problem(key, format!("{i} is out of range ({min} to {max})"), None),
            other => self.wrong(key, "an integer", other),
        }
    }

    pub fn int<T: TryFrom<i64>>(&mut self, key: &'static str, min: i64, max: i64) -> Option<T> {
        match self.required(key, None) {
            true => self.opt_int(key, min, max),
            false => None,
        }
    }

    /// `default` when absent; a wrong value is reported and read as `default`.
    pub fn int_or<T: TryFrom<i64>>(&mut self, key: &'static str, min: i64, max: i64, default: T) -> T {
        self.opt_int(key, min, max).unwrap_or(default)
    }

    /// See [`parse_duration`](crate::parse_duration).
    pub fn opt_duration(&mut self, key: &'static str) -> Option<Duration> {
        match parse_duration(self.get(key)?) {
            Ok(d) => Some(d),
            Err(m) => self.problem(key, m, Some("bare numbers are milliseconds")),
        }
    }

    pub fn duration_or(&mut self, key: &'static str, default: Duration) -> Duration {
        self.opt_duration(key).unwrap_or(default)
    }

    /// A command line: a non-empty list of strings.
    pub fn opt_argv(&mut self, key: &'static str) -> Option<Vec<String>> {
        let v = self.get(key)?;
        self.argv_value(v, self.key(key))
    }

    /// `v` as a command line, problems at the full path `key`.
    pub fn argv_value(&self, v: &Value, key: String) -> Option<Vec<String>> {
        let hint = Some("an argv is a list of strings, e.g. [\"/usr/sbin/asterisk\", \"-rx\", \"core show channels\"]");
        match v.as_array() {
            Some(items) if !items.is_empty() => {
                let argv: Option<Vec<String>> = items.iter().map(|i| i.as_str().map(str::to_string)).collect();
                argv.or_else(|| self.problem_at(key, "every argv item must be a string".into(), hint))
            }
            Some(_) => self.problem_at(key, "an argv must not be empty".into(), hint),
            None => self.problem_at(key, format!("expected a list of strings, found {}", v.type_str()), hint),
        }
    }

    /// Every item of a list, converted by `item` (given its full path; it reports its own
    /// problems). `None` when absent, so `[]` can be told from no answer.
    pub fn opt_list<T>(
        &mut self,
        key: &'static str,
        item: impl Fn(&Value, String, &Self) -> Option<T>,
    ) -> Option<Vec<T>> {
        match self.get(key)? {
            Value::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| item(v, format!("{}[{i}]", self.key(key)), self))
                    .collect(),
            ),
            other => self.wrong(key, "a list", other),
        }
    }

    /// [`opt_list`](Self::opt_list), empty when absent.
    pub fn list<T>(&mut self, key: &'static str, item: impl Fn(&Value, String, &Self) -> Option<T>) -> Vec<T> {
        self.opt_list(key, item).unwrap_or_default()
    }

    /// A list of strings.
    pub fn strings_list(&mut self, key: &'static str) -> Vec<String> {
        self.list(key, |v, key, r| match v {
            Value::String(s) => Some(s.clone()),
            other => r.problem_at(key, format!("expected a string, found {}", other.type_str()), None),
        })
    }

    /// Every key of this table, converted by `item`: for maps such as a link's `addresses`.
    pub fn all<T>(&mut self, item: impl Fn(&Value, String, &Self) -> Option<T>) -> BTreeMap<String, T> {
        let entries = std::mem::replace(&mut self.table, empty());
        entries.iter().filter_map(|(k, v)| Some((k.clone(), item(v, self.key(k), self)?))).collect()
    }

    /// Every key of this table as a string (numbers and booleans as written): environments,
    /// OCF parameters.
    pub fn strings(&mut self) -> BTreeMap<String, String> {
        self.all(|v, key, r| match v {
            Value::String(x) => Some(x.clone()),
            Value::Integer(i) => Some(i.to_string()),
            Value::Boolean(b) => Some(b.to_string()),
            other => r.problem_at(key, format!("expected a string, found {}", other.type_str()), None),
        })
    }

    /// A sub-table; the caller [finishes](Self::finish) it.
    pub fn opt_table(&mut self, key: &'static str) -> Option<Reader<'a>> {
        match self.get(key)? {
            Value::Table(t) => Some(Reader::new(self.key(key), t, self.problems)),
            other => self.wrong(key, "a table", other),
        }
    }

    pub fn table(&mut self, key: &'static str) -> Option<Reader<'a>> {
        match self.required(key, None) {
            true => self.opt_table(key),
            false => None,
        }
    }

    /// A table whose keys all have defaults: absent reads as empty. Finished here.
    pub fn table_or_empty<T>(&mut self, key: &'static str, read: impl FnOnce(&mut Reader<'a>) -> T) -> T {
        let mut r = self.opt_table(key).unwrap_or_else(|| Reader::new(self.key(key), empty(), self.problems));
        let value = read(&mut r);
        r.finish();
        value
    }

    /// An optional sub-table, read by `read` and finished: `[mail]`, `[watchdog]`.
    pub fn section<T>(&mut self, key: &'static str, read: impl FnOnce(&mut Reader<'a>) -> T) -> Option<T> {
        let mut r = self.opt_table(key)?;
        let value = read(&mut r);
        r.finish();
        Some(value)
    }

    /// `[[key]]` tables, at paths like `link[1]`; the caller finishes each. `None` when absent.
    pub fn opt_tables(&mut self, key: &'static str) -> Option<Vec<Reader<'a>>> {
        match self.get(key)? {
            Value::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| match v {
                        Value::Table(t) => Some(Reader::new(format!("{}[{i}]", self.key(key)), t, self.problems)),
                        other => self.wrong(&format!("{key}[{i}]"), "a table", other),
                    })
                    .collect(),
            ),
            other => self.wrong(key, &format!("[[{key}]] tables"), other),
        }
    }

    /// At least one `[[key]]` table.
    pub fn tables(&mut self, key: &'static str) -> Vec<Reader<'a>> {
        if !self.required(key, None) {
            return Vec::new();
        }
        let tables = self.opt_tables(key).unwrap_or_default();
        if matches!(self.table.get(key), Some(Value::Array(items)) if items.is_empty()) {
            let hint = format!("add at least one [[{key}]] table");
            return self.problem(key, "must not be empty".into(), Some(&hint)).unwrap_or_default();
        }
        tables
    }

    /// Reports every key nobody asked for, with the nearest known key as a hint.
    pub fn finish(&mut self) {
        self.finish_except(&[]);
    }

    /// [`finish`](Self::finish), leaving out `reported`: keys already refused with a problem
    /// of their own.
    pub fn finish_except(&mut self, reported: &[&str]) {
        let table = std::mem::replace(&mut self.table, empty());
        for key in table.keys() {
            if self.asked.contains(&key.as_str()) || reported.contains(&key.as_str()) {
                continue;
            }
            let nearest = self.asked.iter().map(|k| (edit_distance(k, key), *k)).filter(|(d, _)| *d <= 3).min();
            let hint = match nearest {
                Some((_, k)) => format!("did you mean `{k}`?"),
                None if self.asked.is_empty() => "this section takes no keys".into(),
                None => format!("known keys here: {}", self.asked.join(", ")),
            };
            self.problem::<()>(key, "unknown key".into(), Some(&hint));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `text` as section `s` with `read`; the problems as `key: message (hint)` lines.
    fn problems(text: &str, read: impl FnOnce(&mut Reader)) -> Vec<String> {
        let table: Table = text.parse().unwrap();
        let problems = Problems::new();
        let mut r = Reader::new("s", &table, &problems);
        read(&mut r);
        r.finish();
        problems.into_vec().iter().map(Problem::to_string).collect()
    }

    #[test]
    fn each_getter_reports_its_problem_at_the_key_path() {
        type Read = fn(&mut Reader);
        let cases: &[(&str, Read, &[&str])] = &[
            ("k = \"x\"", |r| assert_eq!(r.string("k").as_deref(), Some("x")), &[]),
            ("", |r| assert!(r.string("k").is_none()), &["s.k: missing required key"]),
            ("", |r| assert!(r.opt_string("k").is_none()), &[]),
            ("k = \" \"", |r| assert!(r.opt_string("k").is_none()), &["s.k: must not be empty"]),
            ("k = 3", |r| assert!(r.string("k").is_none()), &["s.k: expected a string, found integer"]),
            ("k = 70000", |r| assert_eq!(r.int_or::<u16>("k", 1, 65535, 694), 694), &["s.k: 70000 is out of range (1 to 65535)"]),
            ("", |r| assert_eq!(r.int_or::<u16>("k", 1, 65535, 694), 694), &[]),
            ("", |r| assert!(r.int::<u32>("k", 1, 9).is_none()), &["s.k: missing required key"]),
            ("k = \"2\"", |r| assert!(r.opt_int::<u32>("k", 1, 9).is_none()), &["s.k: expected an integer, found string"]),
            ("k = 1", |r| assert!(r.bool_or("k", true)), &["s.k: expected true or false, found integer"]),
            ("k = false", |r| assert_eq!(r.opt_bool("k"), Some(false)), &[]),
            ("k = \"30s\"", |r| assert_eq!(r.duration_or("k", Duration::ZERO), Duration::from_secs(30)), &[]),
            (
                "k = \"3 weeks\"",
                |r| assert_eq!(r.duration_or("k", Duration::ZERO), Duration::ZERO),
                &["s.k: unknown unit `weeks` in `3 weeks` (hint: bare numbers are milliseconds)"],
            ),
            ("k = \"/x\"", |r| assert_eq!(r.path_or("k", "/d"), PathBuf::from("/x")), &[]),
            ("", |r| assert_eq!(r.path_or("k", "/d"), PathBuf::from("/d")), &[]),
            (
                "k = \"198.51.100.1/40\"",
                |r| assert!(r.cidr("k", "e.g. 198.51.100.1/24").is_none()),
                &["s.k: `/40` is not a prefix length for 198.51.100.1 (0 to 32) (hint: e.g. 198.51.100.1/24)"],
            ),
            (
                "k = \"7\"",
                |r| assert!(r.string_as("k", |t| t.parse::<u8>().map_err(|_| format!("`{t}`")).map(|_| ()), None).is_some()),
                &[],
            ),
            ("k = [\"a\", 1]", |r| assert_eq!(r.strings_list("k"), ["a"]), &["s.k[1]: expected a string, found integer"]),
            ("k = 1", |r| assert!(r.opt_list("k", |_, _, _| Some(())).is_none()), &["s.k: expected a list, found integer"]),
            ("k = []", |r| assert_eq!(r.opt_list("k", |_, _, _| Some(())), Some(vec![])), &[]),
            ("k = [\"/bin/true\"]", |r| assert_eq!(r.opt_argv("k"), Some(vec!["/bin/true".to_string()])), &[]),
            (
                "k = []",
                |r| assert!(r.opt_argv("k").is_none()),
                &["s.k: an argv must not be empty (hint: an argv is a list of strings, e.g. [\"/usr/sbin/asterisk\", \"-rx\", \"core show channels\"])"],
            ),
            ("[k]\nA = 1\nb = true", |r| assert_eq!(r.table("k").unwrap().strings().len(), 2), &[]),
            ("k = { x = [] }", |r| assert!(r.table("k").unwrap().strings().is_empty()), &["s.k.x: expected a string, found array"]),
            ("", |r| assert!(r.table("k").is_none()), &["s.k: missing required key"]),
            ("k = 1", |r| assert!(r.opt_table("k").is_none()), &["s.k: expected a table, found integer"]),
            ("", |r| assert!(r.tables("k").is_empty()), &["s.k: missing required key"]),
            ("k = []", |r| assert!(r.tables("k").is_empty()), &["s.k: must not be empty (hint: add at least one [[k]] table)"]),
            ("k = [1]", |r| assert!(r.tables("k").is_empty()), &["s.k[0]: expected a table, found integer"]),
            ("", |r| assert!(r.opt_tables("k").is_none()), &[]),
        ];
        for (text, read, want) in cases {
            assert_eq!(problems(text, read), *want, "{text}");
        }
    }

    #[test]
    fn unknown_keys_get_the_nearest_known_key_or_the_list() {
        type Read = fn(&mut Reader);
        let cases: &[(&str, Read, &[&str])] = &[
            (
                "prot = 1",
                |r| {
                    r.opt_int::<u16>("port", 1, 9);
                },
                &["s.prot: unknown key (hint: did you mean `port`?)"],
            ),
            (
                "colour = 1",
                |r| drop((r.opt_string("server"), r.opt_string("from"))),
                &["s.colour: unknown key (hint: known keys here: server, from)"],
            ),
            ("x = 1", |_| (), &["s.x: unknown key (hint: this section takes no keys)"]),
            // A required key that is absent is still known.
            (
                "nme = 1",
                |r| drop(r.string("name")),
                &["s.name: missing required key", "s.nme: unknown key (hint: did you mean `name`?)"],
            ),
            // A sub-table's keys are its own, at their path.
            (
                "[t]\nportt = 1",
                |r| {
                    r.table_or_empty("t", |t| {
                        t.opt_bool("port");
                    })
                },
                &["s.t.portt: unknown key (hint: did you mean `port`?)"],
            ),
            (
                "[[t]]\nb = 1\n[[t]]\na = 1",
                |r| {
                    for mut t in r.tables("t") {
                        t.opt_int::<u8>("a", 0, 9);
                        t.finish();
                    }
                },
                &["s.t[0].b: unknown key (hint: did you mean `a`?)"],
            ),
            // A map takes every key.
            ("[m]\nanything = \"x\"", |r| drop(r.table("m").unwrap().strings()), &[]),
        ];
        for (text, read, want) in cases {
            assert_eq!(problems(text, read), *want, "{text}");
        }
    }

    #[test]
    fn keys_refused_on_their_own_are_not_also_unknown() {
        let table: Table = "password = \"x\"\nuser = \"u\"".parse().unwrap();
        let problems = Problems::new();
        let mut r = Reader::root(&table, &problems);
        r.opt_string("user");
        r.problem::<()>("password", "inline".into(), None);
        r.finish_except(&["password"]);
        assert_eq!(problems.into_vec().iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), ["password"]);
    }
}
