//! What a JSON parse error may say: the field and the expected type, never the value.
//!
//! `serde`'s messages quote the offending value (`invalid type: integer `7777...`, expected a
//! string`). In a configuration that value may be a secret (a numeric client secret, a key),
//! and configuration errors are logged: the message is rebuilt from its kind and the expected
//! type alone.

use serde_json::error::Category;

/// The message of `e`, without any value it quotes.
pub fn describe(e: &serde_json::Error) -> String {
    let at = format!("at line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Io => "cannot be read".to_owned(),
        Category::Eof => format!("ends early ({at})"),
        Category::Syntax => format!("is not valid JSON ({at})"),
        Category::Data => data_message(&e.to_string()),
    }
}

/// serde's data errors (see `serde::de::Error`): keep the kind, and what was expected, which
/// names types, fields and variants of ours; drop what was found.
fn data_message(message: &str) -> String {
    // serde_json appends " at line L column C"; the expected part ends before it.
    let message = message
        .rfind(" at line ")
        .and_then(|i| message.get(..i))
        .unwrap_or(message);
    for field_kind in ["missing field", "duplicate field", "unknown field"] {
        if let Some(rest) = message.strip_prefix(field_kind) {
            // A name, not a value: one of our fields (`unknown field `timeout`, expected one
            // of ...`). An unknown key is the caller's text and may hold a value
            // (`client_secret:VALUE`, a missing space in YAML): named only when it is a name.
            let Some((key, after)) = rest.strip_prefix(" `").and_then(|r| r.split_once('`')) else {
                return field_kind.to_owned();
            };
            return format!("{field_kind} `{}`{after}", key_name(key));
        }
    }
    const KINDS: [&str; 4] = [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
    ];
    let kind = KINDS
        .into_iter()
        .find(|k| message.starts_with(k))
        .unwrap_or("invalid value");
    match message.split_once(", expected ") {
        Some((_, expected)) => format!("{kind}, expected {expected}"),
        None => kind.to_owned(),
    }
}

/// A configuration key as it may be printed: itself when it looks like a field name (letters,
/// digits, `_`, `-`, at most 64), else a placeholder: a key that is not a name may carry a
/// value (`client_secret:VALUE`).
pub fn key_name(key: &str) -> std::borrow::Cow<'_, str> {
    let name = key.len() <= 64
        && !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if name {
        std::borrow::Cow::Borrowed(key)
    } else {
        std::borrow::Cow::Borrowed("(a key that is not a field name)")
    }
}

/// One step of the path to where a JSON parse stopped: a member's key (as written, escapes
/// included) or an array's index.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Where in `json` the data error `e` was found (empty for any other error): the keys and indexes from the root
/// down to the value being read (or the member whose key was just read, for an unknown field;
/// or the object that ended, for a missing field). serde_json gives a line and column only;
/// this walks the text up to there. Bounded by the text: one pass, one step per open container.
pub fn path_at<'a>(json: &'a [u8], e: &serde_json::Error) -> Vec<Step<'a>> {
    // Data errors only. A syntax error's position may take in the start of the next token: a
    // key without its `:` followed by a secret would make the secret look like a key.
    if e.classify() != Category::Data {
        return Vec::new();
    }
    let (mut path, key_pending) = path_to(json, offset_of(json, e.line(), e.column()));
    // An enum written as `{"variant": ...}` with an unknown variant stops just after that key:
    // the key names no member, the path ends at the enum.
    if key_pending && e.to_string().starts_with("unknown variant") {
        path.pop();
    }
    path
}

/// The byte offset of serde_json's one-based line and its column (bytes read on that line).
fn offset_of(json: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match json
            .get(start..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            Some(newline) => start += newline + 1,
            None => return json.len(),
        }
    }
    start.saturating_add(column).min(json.len())
}

/// The path at byte `end`, and whether it ends with a key not yet followed by its `:`.
fn path_to(json: &[u8], end: usize) -> (Vec<Step<'_>>, bool) {
    // One frame per open container: its current step, if a member or an element has begun.
    let mut frames: Vec<(bool, Option<Step<'_>>)> = Vec::new(); // (is an object, step)
    let mut after_colon = false; // in an object: the current member's value has begun
    let mut i = 0;
    while i < end {
        let Some(&b) = json.get(i) else { break };
        match b {
            b'{' | b'[' => {
                if let Some((false, step @ None)) = frames.last_mut() {
                    *step = Some(Step::Index(0));
                }
                frames.push((b == b'{', None));
                after_colon = false;
            }
            b'}' | b']' => {
                frames.pop();
                after_colon = true;
            }
            b':' => after_colon = true,
            b',' => match frames.last_mut() {
                Some((true, step)) => {
                    *step = None;
                    after_colon = false;
                }
                Some((false, step)) => {
                    let next = match step {
                        Some(Step::Index(n)) => *n + 1,
                        _ => 0,
                    };
                    *step = Some(Step::Index(next));
                }
                None => {}
            },
            b'"' => {
                let start = i + 1;
                i = start;
                while let Some(&c) = json.get(i) {
                    match c {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                match frames.last_mut() {
                    Some((true, step)) if !after_colon => {
                        let key = json.get(start..i.min(json.len())).unwrap_or_default();
                        *step = Some(Step::Key(std::str::from_utf8(key).unwrap_or("")));
                    }
                    Some((false, step @ None)) => *step = Some(Step::Index(0)),
                    _ => {}
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => {
                if let Some((false, step @ None)) = frames.last_mut() {
                    *step = Some(Step::Index(0));
                }
            }
        }
        i += 1;
    }
    // An array just opened, whose first element is being read (a value of the wrong type is
    // refused before it is read), is at its element 0.
    let key_pending = matches!(frames.last(), Some((true, Some(_)))) && !after_colon;
    let path = frames
        .into_iter()
        .filter_map(|(object, step)| {
            if object {
                step
            } else {
                step.or(Some(Step::Index(0)))
            }
        })
        .collect();
    (path, key_pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of<T: serde::de::DeserializeOwned + std::fmt::Debug>(json: &str) -> String {
        describe(&serde_json::from_str::<T>(json).unwrap_err())
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct S {
        secret: String,
        n: Option<u8>,
        e: Option<E>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "lowercase")]
    enum E {
        One,
    }

    #[test]
    fn never_quotes_the_value() {
        for (json, want) in [
            (
                r#"{"secret": 7777123456789}"#,
                "invalid type, expected a string",
            ),
            (
                r#"{"secret": -7777123456789}"#,
                "invalid type, expected a string",
            ),
            (
                r#"{"secret": 77771234.5}"#,
                "invalid type, expected a string",
            ),
            (
                r#"{"secret": [7777123456789]}"#,
                "invalid type, expected a string",
            ),
            (r#"{"secret": true}"#, "invalid type, expected a string"),
            (
                r#"{"secret": "x", "n": 7777123456789}"#,
                "invalid value, expected u8",
            ),
            (
                r#"{"secret": "x", "e": "s3cr3tvariant"}"#,
                "unknown variant, expected `one`",
            ),
            (
                r#"{"secret": "x", "extra": 7777}"#,
                "unknown field `extra`, expected one of",
            ),
            (r#"{"n": 1}"#, "missing field `secret`"),
        ] {
            let got = error_of::<S>(json);
            assert!(got.starts_with(want), "{json}: {got}");
            for secret in ["7777", "s3cr3t"] {
                assert!(!got.contains(secret), "{json}: {got}");
            }
        }
        let got = error_of::<S>(r#"{"secret": "x", "client_secret:Sup3rS3cret": 1}"#);
        assert!(got.starts_with("unknown field `(a key"), "{got}");
        assert!(!got.contains("Sup3r"), "{got}");
        assert!(error_of::<S>(r#"{"secret": "x""#).starts_with("ends early"));
        assert!(error_of::<S>(r#"{"secret": s3cr3t}"#).starts_with("is not valid JSON"));
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
        list: Option<Vec<Inner>>,
        nested: Option<Vec<Vec<u8>>>,
        name: Option<String>,
        e: Option<E>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u8,
        s: Option<String>,
    }

    fn tracked(json: &str) -> String {
        let mut de = serde_json::Deserializer::from_str(json);
        let e = serde_path_to_error::deserialize::<_, Outer>(&mut de).unwrap_err();
        let mut out = String::new();
        for segment in e.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => out += &format!("[{index}]"),
                serde_path_to_error::Segment::Map { key } => out += &format!(".{key}"),
                other => out += &format!(".{other}"),
            }
        }
        out
    }

    fn located(json: &str) -> String {
        let e = serde_json::from_str::<Outer>(json).unwrap_err();
        let mut out = String::new();
        for step in path_at(json.as_bytes(), &e) {
            match step {
                Step::Index(index) => out += &format!("[{index}]"),
                Step::Key(key) => out += &format!(".{key}"),
            }
        }
        out
    }

    /// The path found from serde_json's line and column is the one `serde_path_to_error`
    /// tracks while deserializing, for every kind of data error (a syntax error's position
    /// may take in the byte it stopped at: its path is near, and its message has the line), at every depth, with strings
    /// that hold JSON's punctuation and with line breaks.
    #[test]
    fn the_path_is_the_one_a_tracking_deserializer_finds() {
        let cases = [
            r#"{"inner": {"n": "x"}}"#,
            r#"{"inner": {"n": 300}}"#,
            r#"{"inner": {"n": 1, "s": 5}}"#,
            r#"{"inner": {"n": 1, "bogus": 5}}"#,
            r#"{"inner": {"s": "x"}}"#,
            r#"{"inner": {"n": 1}, "list": [{"n": 1}, {"n": 1, "s": [1]}]}"#,
            r#"{"inner": {"n": 1}, "list": [{"n": 1}, {}]}"#,
            r#"{"inner": {"n": 1}, "list": [{"n": 1}, {"n": 2}, {"n": true}]}"#,
            r#"{"inner": {"n": 1}, "list": {"n": 1}}"#,
            r#"{"inner": {"n": 1}, "nested": [[1, 2], [3, 4, 999]]}"#,
            r#"{"inner": {"n": 1}, "nested": [[1, 2], "x"]}"#,
            r#"{"inner": {"n": 1}, "name": "a\"}],{[:b", "e": "nope"}"#,
            r#"{"name": "{\"inner\": [", "inner": {"n": -1}}"#,
            "{\n  \"inner\": {\n    \"n\": 1,\n    \"s\": {}\n  }\n}",
            "{\n  \"inner\": {\"n\": 1},\n  \"list\": [\n    {\"n\": 1},\n    {\"n\": \"2\"}\n  ]\n}",
            r#"{"inner": {"n": 1}, "e": 3}"#,
            r#"{"inner": {"n": 1}, "extra": {"deep": [1, 2]}}"#,
            r#"{"inner": {"n": 1}}  "#,
            r#"{}"#,
            r#"[]"#,
            r#"7"#,
        ];
        for json in cases {
            let data_error =
                serde_json::from_str::<Outer>(json).is_err_and(|e| e.classify() == Category::Data);
            if !data_error {
                continue;
            }
            assert_eq!(located(json), tracked(json), "{json}");
        }
        // Every value of a document, one at a time, replaced by each kind of value.
        let valid = [
            "1",
            r#""x""#,
            "1",
            r#"{"n": 1}"#,
            "[2]",
            "3",
            r#""y""#,
            r#""one""#,
        ];
        let template = r#"{"inner": {"n": @, "s": @}, "list": [{"n": @}, @], "nested": [@, [@]],
            "name": @, "e": @}"#;
        let others = [
            "300",
            "-1",
            r#""x""#,
            "true",
            "null",
            "[]",
            "{}",
            "[1]",
            r#"{"n": 1}"#,
        ];
        for slot in 0..valid.len() {
            for other in others {
                let mut json = String::new();
                for (i, part) in template.split('@').enumerate() {
                    json += part;
                    if i < valid.len() {
                        json += if i == slot { other } else { valid[i] };
                    }
                }
                let data_error = serde_json::from_str::<Outer>(&json)
                    .is_err_and(|e| e.classify() == Category::Data);
                if data_error {
                    assert_eq!(located(&json), tracked(&json), "{json}");
                }
            }
        }
        assert_eq!(
            located(r#"{"inner": {"n": 1}, "list": [{"n": 1}, {"n": 1, "s": [1]}]}"#),
            ".list[1].s"
        );
    }
}
