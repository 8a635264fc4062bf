//! The one TOML reader of pbxha: pbxha.toml (with the sections other crates read for it) and
//! the installer's answers file.
//!
//! serde's derive stops at the first unknown or missing key, and `check-config` must report
//! them all in one run, so tables are walked by hand with a [`Reader`] that remembers which
//! keys were asked for: whatever is left when it [finishes](Reader::finish) is an unknown key,
//! reported with the nearest known key ("did you mean") or the list of them. Every reader of
//! one file writes to one [`Problems`] list, each problem with its full key path, so a section
//! read by another crate lands in the same report.

mod cidr;
mod isolation;
mod reader;

use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

use toml::{Table, Value};

pub use cidr::Cidr;
pub use isolation::OnIsolation;
pub use reader::Reader;

/// One thing wrong with a file: where (`link[0].addresses.b`), what, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The key path; `(line N)` for a syntax error.
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Every problem found in one file so far, shared by the readers of its tables.
#[derive(Debug, Default)]
pub struct Problems(RefCell<Vec<Problem>>);

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&self, problem: Problem) {
        self.0.borrow_mut().push(problem);
    }

    pub fn extend(&self, problems: impl IntoIterator<Item = Problem>) {
        self.0.borrow_mut().extend(problems);
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0.into_inner()
    }

    /// `value` when nothing at all was reported; otherwise every problem.
    pub fn result<T>(self, value: Option<T>) -> Result<T, Vec<Problem>> {
        let problems = self.into_vec();
        match value {
            Some(value) if problems.is_empty() => Ok(value),
            _ => Err(problems),
        }
    }
}

/// Text → table; a syntax error is one problem at `(line N)`.
pub fn parse_toml(text: &str) -> Result<Table, Problem> {
    text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| 1 + text[..s.start.min(text.len())].matches('\n').count());
        Problem {
            key: line.map_or("(syntax)".into(), |l| format!("(line {l})")),
            message: e.message().to_string(),
            hint: Some("this is not valid TOML".into()),
        }
    })
}

/// Reads one section handed over whole (`[mail]`, `[mysql]`) at key path `path` with `read`,
/// then reports its unknown keys: the value only if nothing was wrong.
pub fn read_table<T>(
    table: &Table,
    path: &str,
    read: impl FnOnce(&mut Reader) -> Option<T>,
) -> Result<T, Vec<Problem>> {
    let problems = Problems::new();
    let mut r = Reader::new(path, table, &problems);
    let value = read(&mut r);
    r.finish();
    problems.result(value)
}

/// `200`, `"200ms"`, `"30s"`, `"2m"` or `"1h"`; bare integers are milliseconds.
pub fn parse_duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Integer(ms) if *ms >= 0 => Ok(Duration::from_millis(*ms as u64)),
        Value::Integer(_) => Err("must not be negative".into()),
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let num: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration"))?;
            let ms = match unit.trim() {
                "ms" | "" => num,
                "s" => num * 1000.0,
                "m" | "min" => num * 60_000.0,
                "h" => num * 3_600_000.0,
                other => return Err(format!("unknown unit `{other}` in `{s}`")),
            };
            Ok(Duration::from_millis(ms.round() as u64))
        }
        other => Err(format!("expected milliseconds or a string such as \"30s\", found {}", other.type_str())),
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: [(&str, Result<u64, &str>); 8] = [
            ("200", Ok(200)),
            ("\"200ms\"", Ok(200)),
            ("\"1.5s\"", Ok(1500)),
            ("\"2m\"", Ok(120_000)),
            ("\"1h\"", Ok(3_600_000)),
            ("-1", Err("must not be negative")),
            ("\"3 fortnights\"", Err("unknown unit `fortnights` in `3 fortnights`")),
            ("true", Err("expected milliseconds or a string such as \"30s\", found boolean")),
        ];
        for (text, want) in cases {
            let v: Table = format!("v = {text}").parse().unwrap();
            let got = parse_duration(&v["v"]).map(|d| d.as_millis() as u64);
            assert_eq!(got, want.map_err(str::to_string), "{text}");
        }
    }

    #[test]
    fn edit_distances() {
        for (a, b, d) in [("port", "prot", 2), ("seed", "sed", 1), ("", "abc", 3), ("same", "same", 0)] {
            assert_eq!(edit_distance(a, b), d, "{a} → {b}");
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let p = parse_toml("a = 1\nb = 2\nc = = 3\n").unwrap_err();
        assert_eq!((p.key.as_str(), p.hint.as_deref()), ("(line 3)", Some("this is not valid TOML")));
    }

    #[test]
    fn a_section_read_whole_yields_its_value_only_without_problems() {
        let t: Table = "a = 1\nb = 2".parse().unwrap();
        assert_eq!(read_table(&t, "s", |r| r.int::<u8>("a", 0, 9)), Err(vec![unknown("s.b", "did you mean `a`?")]));
        let t: Table = "a = 1".parse().unwrap();
        assert_eq!(read_table(&t, "s", |r| r.int::<u8>("a", 0, 9)), Ok(1));
    }

    fn unknown(key: &str, hint: &str) -> Problem {
        Problem { key: key.into(), message: "unknown key".into(), hint: Some(hint.into()) }
    }

    #[test]
    fn display_has_path_message_and_hint() {
        assert_eq!(
            unknown("mysql.sed", "did you mean `seed`?").to_string(),
            "mysql.sed: unknown key (hint: did you mean `seed`?)"
        );
    }
}
