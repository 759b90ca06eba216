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
}
