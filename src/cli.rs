//! The `token-filter` command (feature `cli`, never in the `.wasm`): the filter's own validation
//! run before a configuration reaches a gateway.
//!
//! - `check FILE...`: every filter configuration in each file, whatever holds it (a plugin
//!   configuration as JSON, an Istio `WasmPlugin`, an Envoy Gateway `EnvoyExtensionPolicy`, an
//!   Envoy bootstrap, listener or `EnvoyFilter` patch), taken as the filter would receive it (in
//!   Envoy, a `StringValue`'s text: a `Struct` or no configuration is an error) and validated
//!   exactly as `on_configure` does; each error printed as `FILE: <where>: field: message`,
//!   never a value. Exit 0: all valid; 1: any refused, a file holding none, or one larger than
//!   `MAX_FILE_BYTES` or nested deeper than `MAX_DEPTH`; 2: a file that cannot be read or parsed.
//! - `schema`: the configuration's JSON Schema (draft 2020-12).
//! - `explain FILE`: what a configuration does: its policies in order, the paths the filter
//!   answers, the calls it makes, the stores and the memory they reserve at start.

use std::fmt::Write as _;
use std::io::Write;

use serde_json::Value;

use crate::config::{self, Config, ConfigError, KeySource};

/// The module's file name: an Envoy Wasm filter loading it is one of ours.
const MODULE_FILE: &str = "envoy_token_filter.wasm";
/// The `root_id` this filter's configurations use.
const ROOT_ID: &str = "token_filter";
/// Envoy's Wasm HTTP filter message.
const WASM_FILTER: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";

/// What `check` says of a file in which it recognises nothing of this filter's.
const NOTHING_FOUND: &str = "no token filter configuration found (looked for a plugin \
     configuration as JSON, an Istio WasmPlugin, an Envoy Gateway EnvoyExtensionPolicy, and Envoy \
     Wasm HTTP filters whose root_id is token_filter or whose code is envoy_token_filter.wasm)";

/// One filter configuration found in a file, and where.
pub struct Found {
    /// Where in the file (`document 2 (WasmPlugin orders/token-filter): spec.pluginConfig`).
    pub place: String,
    /// The configuration as the filter receives it (JSON text), or why the filter would receive
    /// none it can read (a `google.protobuf.Struct`, no configuration at all).
    pub bytes: Result<Vec<u8>, ConfigError>,
    /// Envoy's Wasm filter config: whether it lets the filter read bodies
    /// (`allow_on_headers_stop_iteration`); `None` where the platform decides (Istio, Envoy
    /// Gateway).
    pub reads_bodies: Option<bool>,
}

impl Found {
    /// The filter's own validation, exactly as `on_configure` runs it on these bytes.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        match &self.bytes {
            Ok(bytes) => Config::from_slice(bytes),
            Err(e) => Err(e.clone()),
        }
    }
}

/// Largest file `check` and `explain` read. A configuration is at most 64 KiB
/// (`config::MAX_CONFIG_BYTES`); a bootstrap or a manifest holding a few is far below this.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Deepest nesting of maps and lists a file may have. The examples in `envoy/` and `deploy/`
/// nest 19 deep at most.
pub const MAX_DEPTH: usize = 64;
/// The most a file's text times its YAML aliases may come to (each alias copies its anchor).
pub const MAX_EXPANDED_BYTES: usize = 64 * 1024 * 1024;

/// How many YAML aliases (`*name`) `text` may hold: a `*` at the start of a node (after a
/// space, the line's start, `[`, `{`, `,`, `-`, `:`) followed by a name character. It may count
/// a `*` in a plain scalar too; a bound needs no more.
fn aliases(text: &str) -> usize {
    let bytes = text.as_bytes();
    bytes
        .iter()
        .enumerate()
        .filter(|&(i, &b)| {
            b == b'*'
                && i.checked_sub(1).and_then(|j| bytes.get(j)).is_none_or(|p| {
                    matches!(
                        p,
                        b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',' | b'-' | b':'
                    )
                })
                && bytes
                    .get(i + 1)
                    .is_some_and(|n| n.is_ascii_alphanumeric() || matches!(n, b'_' | b'-'))
        })
        .count()
}

/// Why a file was not looked into.
#[derive(Debug)]
pub enum FileError {
    /// It cannot be read or parsed (exit 2).
    Unreadable(String),
    /// It is refused as input: larger than `MAX_FILE_BYTES` or nested deeper than `MAX_DEPTH`
    /// (exit 1).
    Refused(String),
}

impl FileError {
    /// The exit code it makes.
    pub fn code(&self) -> i32 {
        match self {
            Self::Unreadable(_) => 2,
            Self::Refused(_) => 1,
        }
    }

    fn too_deep(at: &str) -> Self {
        Self::Refused(format!(
            "nested deeper than {MAX_DEPTH} levels{at}: refused (a configuration nests far less)"
        ))
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable(why) | Self::Refused(why) => f.write_str(why),
        }
    }
}

/// Runs the command with `args` (without the program name); returns the exit code.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let usage =
        "usage: token-filter check FILE... | token-filter schema | token-filter explain FILE \
                 | token-filter reference";
    match args.split_first() {
        Some((cmd, files)) if cmd == "check" && !files.is_empty() => check(files, out, err),
        Some((cmd, rest)) if cmd == "schema" && rest.is_empty() => {
            let text = serde_json::to_string_pretty(&config::schema()).unwrap_or_default();
            let _ = writeln!(out, "{text}");
            0
        }
        Some((cmd, [file])) if cmd == "explain" => explain(file, out, err),
        Some((cmd, rest)) if cmd == "reference" && rest.is_empty() => {
            let _ = write!(out, "{}", reference(&config::schema()));
            0
        }
        _ => {
            let _ = writeln!(err, "{usage}");
            2
        }
    }
}

fn check(files: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut code = 0;
    for file in files {
        let found = match read(file) {
            Ok(found) => found,
            Err(e) => {
                let _ = writeln!(err, "{file}: {e}");
                code = code.max(e.code());
                continue;
            }
        };
        if found.is_empty() {
            // Nothing to check is not a pass: a misspelt root_id, a configuration under the
            // wrong key or the wrong file would otherwise go through CI as valid.
            let _ = writeln!(out, "{file}: {NOTHING_FOUND}");
            code = code.max(1);
            continue;
        }
        for f in &found {
            match f.validate() {
                Ok(cfg) => {
                    let _ = writeln!(out, "{file}: {}: valid", f.place);
                    if f.reads_bodies == Some(false) && reads_bodies(&cfg) {
                        let _ = writeln!(
                            out,
                            "{file}: {}: warning: the filter reads request or response bodies \
                             (publish, split responses, revocation) but the Wasm filter lacks \
                             allow_on_headers_stop_iteration: true",
                            f.place
                        );
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "{file}: {}: {}: {}", f.place, e.field, e.message);
                    code = code.max(1);
                }
            }
        }
    }
    code
}

/// Whether the filter reads bodies under `cfg` (then Envoy must let it).
pub fn reads_bodies(cfg: &Config) -> bool {
    cfg.split
        .as_ref()
        .is_some_and(|s| s.publish.is_some() || !s.split_responses.is_empty())
        || cfg.revocation.is_some()
}

/// Every filter configuration in `file` (read up to `MAX_FILE_BYTES`, and refused past it).
pub fn read(file: &str) -> Result<Vec<Found>, FileError> {
    use std::io::Read as _;
    let cannot = |e: std::io::Error| FileError::Unreadable(format!("cannot read: {e}"));
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| FileError::Unreadable("cannot read: not UTF-8 text".to_owned()))?;
    find(&text)
}

fn too_large() -> FileError {
    FileError::Refused(format!(
        "larger than {} MiB: refused unread (a configuration is at most {} KiB)",
        MAX_FILE_BYTES / (1024 * 1024),
        config::MAX_CONFIG_BYTES / 1024
    ))
}

/// Every filter configuration in a file's text: a JSON plugin configuration, or YAML documents.
/// The text is refused before any parser sees it when it is larger than `MAX_FILE_BYTES` or its
/// brackets nest deeper than `MAX_DEPTH` (see `flow_too_deep`), and after parsing when its
/// indentation does.
pub fn find(text: &str) -> Result<Vec<Found>, FileError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    // YAML ends a line at CR, NEL, LS and PS too, not only at LF: the scan reads lines as the
    // parser does.
    let lines: std::borrow::Cow<'_, str> =
        if text.contains(['\r', '\u{85}', '\u{2028}', '\u{2029}']) {
            std::borrow::Cow::Owned(
                text.replace("\r\n", "\n")
                    .replace(['\r', '\u{85}', '\u{2028}', '\u{2029}'], "\n"),
            )
        } else {
            std::borrow::Cow::Borrowed(text)
        };
    if let Some((line, column)) = flow_too_deep(&lines, MAX_DEPTH) {
        return Err(FileError::too_deep(&format!(
            " at line {line} column {column}"
        )));
    }
    // Each alias copies what its anchor names: what the parser builds is bounded by the text
    // times the aliases in it, and refused past MAX_EXPANDED_BYTES.
    let aliases = aliases(text);
    if text.len().saturating_mul(aliases + 1) > MAX_EXPANDED_BYTES {
        return Err(FileError::Refused(format!(
            "{aliases} YAML aliases in {} bytes could expand past {} MiB: refused (a \
             configuration needs far fewer)",
            text.len(),
            MAX_EXPANDED_BYTES / (1024 * 1024)
        )));
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            FileError::Unreadable(format!("not JSON: {}", crate::json_error::describe(&e)))
        })?;
        if depth(&value) > MAX_DEPTH {
            return Err(FileError::too_deep(""));
        }
        // A bootstrap written as JSON is looked into like a YAML one.
        if value.get("static_resources").is_some() || value.get("apiVersion").is_some() {
            let mut out = Vec::new();
            in_document(&value, None, text, "", &mut out);
            return Ok(out);
        }
        return Ok(vec![Found {
            place: "plugin configuration".to_owned(),
            bytes: Ok(text.as_bytes().to_vec()),
            reads_bodies: None,
        }]);
    }
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let label = format!("document {}", i + 1);
        let yaml = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).map_err(|e| {
            let at = e.location().map_or_else(String::new, |l| {
                format!(" at line {} column {}", l.line(), l.column())
            });
            // serde_yaml stops at 128 levels: nesting by indentation, which the scan before
            // parsing does not count.
            if e.to_string().starts_with("recursion limit exceeded") {
                return FileError::too_deep(&format!(" ({label}{at})"));
            }
            FileError::Unreadable(format!("{label}: not YAML{at}"))
        })?;
        if yaml.is_null() {
            continue;
        }
        let value = serde_json::to_value(&yaml)
            .map_err(|_| FileError::Unreadable(format!("{label}: not representable as JSON")))?;
        if depth(&value) > MAX_DEPTH {
            return Err(FileError::too_deep(&format!(" ({label})")));
        }
        in_document(&value, Some(&yaml), text, &label, &mut out);
    }
    Ok(out)
}

/// How deep maps and lists nest in `value` (a scalar: 0). The parsers stop at 128 levels, so
/// this recursion is bounded.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Where the flow collections (`[`, `{`) of a YAML or JSON text first nest deeper than `max`,
/// as (line, column), or `None`. A linear scan before the parser: libyaml's scanner takes time
/// quadratic in this depth (it keeps a possible simple key per flow level and looks at every
/// one at every token: 100,000 levels in 200 KB took 28 s, only to fail at serde_yaml's 128).
/// It reads the text as that scanner does where it matters: brackets inside quoted scalars,
/// block scalars (`|`, `>`), comments and plain scalars (`path: /a[0]`) are text, not
/// collections. It is a scan, not a parser: a file written to mislead it (a plain scalar
/// continued on a line that starts with a quote, then brackets) can still reach the parser
/// deep, within `MAX_FILE_BYTES`. Nesting by indentation costs the parser nothing extra; it is
/// bounded after parsing (`depth`).
fn flow_too_deep(text: &str, max: usize) -> Option<(usize, usize)> {
    let blank = |b: Option<&u8>| b.is_none_or(|b| matches!(b, b' ' | b'\t'));
    let mut depth = 0usize;
    // Inside a quoted scalar (which may span lines): its quote.
    let mut quote: Option<u8> = None;
    // Inside a block scalar: the column of its parent node, and its content's indentation once
    // its first line shows it.
    let mut block: Option<(usize, Option<usize>)> = None;
    // The line before ended inside a plain scalar: a line indented at least this much (any
    // line, in a flow collection) goes on with it.
    let mut plain: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|&&b| b == b' ').count();
        let empty = bytes.iter().all(|b| matches!(b, b' ' | b'\t'));
        if let Some((parent, content)) = block {
            if empty {
                continue;
            }
            let content = content.unwrap_or(indent);
            if content > parent && indent >= content {
                block = Some((parent, Some(content)));
                continue;
            }
            block = None;
        }
        if empty && quote.is_none() {
            continue;
        }
        let mut i = 0;
        if bytes.starts_with("\u{feff}".as_bytes()) {
            i = 3;
        }
        // A document marker ends any scalar (in a quoted one, libyaml stops with an error).
        if (line.starts_with("---") || line.starts_with("...")) && blank(bytes.get(3)) {
            i = 3;
            quote = None;
            plain = None;
        }
        // Whether a node may start here: where a quote or a bracket is an indicator.
        let mut at_node = match plain {
            Some(_) if depth > 0 => false,
            Some(min) => indent < min,
            None => true,
        };
        if at_node {
            plain = None;
        }
        // The column of the node a block scalar here would belong to.
        let mut node_col = indent;
        let mut after_space = true;
        while let Some(&c) = bytes.get(i) {
            i += 1;
            if let Some(q) = quote {
                // A backslash escape in a double-quoted scalar, `''` in a single-quoted one.
                let escaped = (q == b'"' && c == b'\\')
                    || (q == b'\'' && c == q && bytes.get(i) == Some(&b'\''));
                if escaped {
                    i += 1;
                } else if c == q {
                    quote = None;
                    at_node = false;
                    after_space = false;
                }
                continue;
            }
            let space = matches!(c, b' ' | b'\t');
            match c {
                _ if space => {}
                b'#' if after_space => {
                    plain = None;
                    break;
                }
                b'"' | b'\'' if at_node => {
                    quote = Some(c);
                    node_col = i - 1;
                }
                b'[' | b'{' if at_node || depth > 0 => {
                    depth += 1;
                    if depth > max {
                        return Some((n + 1, i));
                    }
                    at_node = true;
                    plain = None;
                }
                b']' | b'}' if depth > 0 => {
                    depth -= 1;
                    at_node = false;
                    plain = None;
                }
                b',' if depth > 0 => {
                    at_node = true;
                    plain = None;
                }
                b'-' | b'?' if at_node && depth == 0 && blank(bytes.get(i)) => node_col = i - 1,
                b':' if depth > 0 || blank(bytes.get(i)) => {
                    at_node = true;
                    plain = None;
                }
                b'|' | b'>' if at_node && depth == 0 => {
                    block = Some((node_col, None));
                    break;
                }
                // A tag or an anchor: the node is what follows it.
                b'!' | b'&' if at_node => {
                    while !blank(bytes.get(i)) {
                        i += 1;
                    }
                }
                _ => {
                    if at_node {
                        // A plain scalar starts; it goes on on lines more indented than the
                        // node it belongs to (at the start of a line: as indented as itself).
                        plain = Some(if i - 1 == indent {
                            indent
                        } else {
                            node_col + 1
                        });
                        node_col = i - 1;
                    }
                    at_node = false;
                }
            }
            after_space = space;
        }
        if at_node {
            plain = None;
        }
    }
    None
}

/// The configurations in one document: `doc` as JSON, and `yaml` as it was written when it was
/// YAML (JSON has no NaN: converting turned `.nan` into `null`, so numbers are looked at there).
fn in_document(
    doc: &Value,
    yaml: Option<&serde_yaml::Value>,
    text: &str,
    label: &str,
    out: &mut Vec<Found>,
) {
    let prefix = |what: &str| {
        if label.is_empty() {
            what.to_owned()
        } else {
            format!("{label} ({what})")
        }
    };
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let namespace = doc.pointer("/metadata/namespace").and_then(Value::as_str);
    let who = namespace.map_or_else(|| name.to_owned(), |n| format!("{n}/{name}"));
    match kind {
        // `kubectl get ... -o yaml`: a list of resources.
        _ if kind == "List" || kind.ends_with("List") => {
            let items = doc.get("items").and_then(Value::as_array);
            for (i, item) in items.into_iter().flatten().enumerate() {
                let item_yaml = yaml.and_then(|y| y.get("items")?.get(i));
                let item_label = if label.is_empty() {
                    format!("items[{i}]")
                } else {
                    format!("{label} items[{i}]")
                };
                in_document(item, item_yaml, text, &item_label, out);
            }
        }
        "WasmPlugin"
            if !manifest_is_ours(
                &[doc.pointer("/spec/url"), doc.pointer("/spec/pluginName")],
                doc.pointer("/spec/pluginConfig"),
            ) => {}
        "WasmPlugin" => out.push(Found {
            place: format!(
                "{}: spec.pluginConfig",
                prefix(&format!("WasmPlugin {who}"))
            ),
            bytes: manifest_configuration(
                text,
                doc.pointer("/spec/pluginConfig"),
                yaml.and_then(|y| y.get("spec")?.get("pluginConfig")),
                "Istio",
            ),
            reads_bodies: None,
        }),
        "EnvoyExtensionPolicy" => {
            let wasm = doc.pointer("/spec/wasm").and_then(Value::as_array);
            for (i, w) in wasm.into_iter().flatten().enumerate() {
                let names = [
                    w.pointer("/code/image/url"),
                    w.pointer("/code/http/url"),
                    w.get("name"),
                    w.get("rootID"),
                ];
                if !manifest_is_ours(&names, w.get("config")) {
                    continue;
                }
                out.push(Found {
                    place: format!(
                        "{}: spec.wasm[{i}].config",
                        prefix(&format!("EnvoyExtensionPolicy {who}"))
                    ),
                    bytes: manifest_configuration(
                        text,
                        w.get("config"),
                        yaml.and_then(|y| y.get("spec")?.get("wasm")?.get(i)?.get("config")),
                        "Envoy Gateway",
                    ),
                    reads_bodies: None,
                });
            }
        }
        _ => {
            let mut path = Vec::new();
            envoy_filters(doc, &mut path, &mut |at, config| {
                let place = if label.is_empty() {
                    at.to_owned()
                } else {
                    format!("{label}: {at}")
                };
                out.push(Found {
                    place,
                    bytes: plugin_configuration(config),
                    reads_bodies: Some(
                        config
                            .get("allow_on_headers_stop_iteration")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    ),
                });
            });
        }
    }
}

/// Envoy's Wasm HTTP filters that load this module (by its file name or the `root_id`
/// `token_filter`), anywhere in `value`: `found(where, config)`. A filter may be written as
/// itself or wrapped in a `TypedStruct` (as Istio `EnvoyFilter` patches often write it): Envoy
/// turns the wrapper's `value` into the message its `type_url` names, so `value.config` is the
/// same `PluginConfig`.
fn envoy_filters(value: &Value, path: &mut Vec<String>, found: &mut dyn FnMut(&str, &Value)) {
    match value {
        Value::Object(map) => {
            let type_url = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or("");
            let wasm = if type_name(type_url("@type")) == WASM_FILTER {
                Some(("config", map.get("config")))
            } else if is_typed_struct(type_url("@type"))
                && type_name(type_url("type_url")) == WASM_FILTER
            {
                Some((
                    "value.config",
                    map.get("value").and_then(|v| v.get("config")),
                ))
            } else {
                None
            };
            if let Some((field, config)) = wasm {
                if let Some(config) = config.filter(|c| is_ours(c)) {
                    found(&format!("{}.{field}", path.join(".")), config);
                }
                return;
            }
            for (k, v) in map {
                path.push(k.clone());
                envoy_filters(v, path, found);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let last = path.pop().unwrap_or_default();
                path.push(format!("{last}[{i}]"));
                envoy_filters(v, path, found);
                path.pop();
                path.push(last);
            }
        }
        _ => {}
    }
}

/// The full name of the message a type URL names
/// (`type.googleapis.com/google.protobuf.StringValue`: `google.protobuf.StringValue`).
fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

fn is_typed_struct(type_url: &str) -> bool {
    matches!(
        type_name(type_url),
        "udpa.type.v1.TypedStruct" | "xds.type.v3.TypedStruct"
    )
}

fn is_ours(config: &Value) -> bool {
    let root = config.get("root_id").and_then(Value::as_str) == Some(ROOT_ID);
    let name = config.get("name").and_then(Value::as_str) == Some(ROOT_ID);
    let code = |pointer: &str| {
        config
            .pointer(pointer)
            .and_then(Value::as_str)
            .is_some_and(|f| f.ends_with(MODULE_FILE))
    };
    root || name
        || code("/vm_config/code/local/filename")
        || code("/vm_config/code/remote/http_uri/uri")
}

/// Whether an Istio or Envoy Gateway Wasm entry is this filter's: its image, URL, name or root
/// id names it, or its configuration has one of this filter's sections. Another vendor's plugin beside it
/// is not checked against this filter's configuration.
fn manifest_is_ours(names: &[Option<&Value>], config: Option<&Value>) -> bool {
    let named = names.iter().any(|n| {
        n.and_then(|v| v.as_str())
            .is_some_and(|u| u.contains("token-filter") || u.contains("token_filter"))
    });
    let shaped = config
        .and_then(Value::as_object)
        .is_some_and(|c| c.contains_key("phantom") || c.contains_key("split"));
    named || shaped
}

fn refused(field: &str, message: String) -> ConfigError {
    ConfigError {
        field: field.to_owned(),
        message,
    }
}

/// A JSON value's kind, for messages that must not print the value.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// How to write the configuration in an Envoy Wasm filter: said by every refusal below.
const AS_STRING_VALUE: &str = "give the JSON as a google.protobuf.StringValue (\"@type\": \
     type.googleapis.com/google.protobuf.StringValue, value: '{...}' or a block scalar)";

/// What Envoy hands the filter from a Wasm filter's `configuration` (a `google.protobuf.Any`):
/// a `StringValue`'s text or a `BytesValue`'s bytes; any other message (a `Struct`, say)
/// arrives as its protobuf encoding, which the filter cannot read, and no configuration as
/// empty bytes, which it refuses (Envoy's `anyToBytes`, `source/extensions/common/wasm`).
fn plugin_configuration(config: &Value) -> Result<Vec<u8>, ConfigError> {
    let any = match config.get("configuration") {
        None | Some(Value::Null) => {
            return Err(refused(
                "configuration",
                format!(
                    "missing: Envoy gives the filter an empty configuration, which it refuses \
                     (the filter does not start); {AS_STRING_VALUE}"
                ),
            ))
        }
        Some(Value::Object(any)) => any,
        Some(other) => {
            return Err(refused(
                "configuration",
                format!(
                    "is a {}, not a google.protobuf.Any (Envoy refuses it); {AS_STRING_VALUE}",
                    kind(other)
                ),
            ))
        }
    };
    let Some(type_url) = any.get("@type").and_then(Value::as_str) else {
        return Err(refused(
            "configuration",
            format!("has no \"@type\"; {AS_STRING_VALUE}"),
        ));
    };
    let value = any.get("value");
    match type_name(type_url) {
        "google.protobuf.StringValue" => match value {
            Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(other) => Err(refused(
                "configuration.value",
                format!(
                    "is a {}, not a string: a StringValue's value is text (Envoy refuses \
                     anything else), so quote the JSON (value: '{{...}}') or write it as a \
                     block scalar (value: |)",
                    kind(other)
                ),
            )),
        },
        "google.protobuf.BytesValue" => match value {
            Some(Value::String(s)) => base64_value(s).ok_or_else(|| {
                refused(
                    "configuration.value",
                    "is not base64: a BytesValue's value is its bytes in base64".to_owned(),
                )
            }),
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(other) => Err(refused(
                "configuration.value",
                format!(
                    "is a {}, not a string: a BytesValue's value is its bytes in base64",
                    kind(other)
                ),
            )),
        },
        other => Err(refused(
            "configuration",
            format!(
                "is a {other}: Envoy hands the filter its protobuf encoding, which the filter \
                 cannot read (it reads JSON text); {AS_STRING_VALUE}"
            ),
        )),
    }
}

/// The first number in `yaml` that JSON cannot carry (`.nan`, `.inf`, `-.inf`), as the field
/// path a configuration error names (`at` is where `yaml` is).
fn non_finite(yaml: &serde_yaml::Value, at: &str) -> Option<String> {
    use serde_yaml::Value as Yaml;
    match yaml {
        Yaml::Number(n) if n.is_nan() || n.is_infinite() => Some(at.to_owned()),
        Yaml::Mapping(map) => map.iter().find_map(|(k, v)| {
            let key = k.as_str().unwrap_or("?");
            let path = if at.is_empty() {
                key.to_owned()
            } else {
                format!("{at}.{key}")
            };
            non_finite(v, &path)
        }),
        Yaml::Sequence(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| non_finite(v, &format!("{at}[{i}]"))),
        Yaml::Tagged(tagged) => non_finite(&tagged.value, at),
        _ => None,
    }
}

/// A protobuf `bytes` field in JSON: base64, standard or URL-safe, padded or not (proto3 JSON
/// accepts each).
fn base64_value(text: &str) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
    use base64::{alphabet, Engine as _};
    let config = general_purpose::GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    [alphabet::STANDARD, alphabet::URL_SAFE]
        .iter()
        .find_map(|a| GeneralPurpose::new(a, config).decode(text).ok())
}

/// A configuration given as YAML in a manifest (Istio's `pluginConfig`, Envoy Gateway's Wasm
/// `config`; `yaml`, the same as written): the platform hands it to the filter as JSON, and
/// none at all as an empty configuration, which the filter refuses.
fn manifest_configuration(
    text: &str,
    cfg: Option<&Value>,
    yaml: Option<&serde_yaml::Value>,
    platform: &str,
) -> Result<Vec<u8>, ConfigError> {
    if let Some(field) = yaml.and_then(|y| non_finite(y, "")) {
        // `.nan` would have reached the parser as `null`, which an optional field takes as
        // "use the default": a NaN timeout would have passed as valid.
        let field = if field.is_empty() {
            "configuration"
        } else {
            &field
        };
        return Err(refused(
            field,
            "is .nan or .inf: not a number the filter can receive (its configuration is JSON, \
             which has neither)"
                .to_owned(),
        ));
    }
    if let Some(field) = cfg.and_then(|c| yaml_1_1_trap(text, c, "")) {
        // kubectl and Helm turn manifests into JSON with YAML 1.1 (sigs.k8s.io/yaml over
        // yaml.v2): there, a plain `NO` is a boolean and `012345` an octal number.
        let field = if field.is_empty() {
            "configuration"
        } else {
            &field
        };
        return Err(refused(
            field,
            "is a plain scalar that YAML 1.1 (kubectl, Helm) reads as a boolean or a number, \
             not the text this check reads: quote it"
                .to_owned(),
        ));
    }
    match cfg {
        None | Some(Value::Null) => Err(refused(
            "configuration",
            format!(
                "missing: {platform} then gives the filter an empty configuration, which it \
                 refuses (the filter does not start)"
            ),
        )),
        Some(cfg) => Ok(cfg.to_string().into_bytes()),
    }
}

/// The first field under `value` whose text is one YAML 1.1 reads as a boolean or a number
/// (`NO`, `on`, `012345`, `1_000`, `12:30`) and that `text` holds unquoted somewhere.
fn yaml_1_1_trap(text: &str, value: &Value, at: &str) -> Option<String> {
    let join = |key: &str| {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    match value {
        Value::String(s) if yaml_1_1_special(s) && unquoted_in(text, s) => Some(at.to_owned()),
        Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| yaml_1_1_trap(text, v, &join(&crate::json_error::key_name(k)))),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| yaml_1_1_trap(text, v, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// Whether YAML 1.1 reads plain `s` as a boolean or an integer where YAML 1.2 reads text.
fn yaml_1_1_special(s: &str) -> bool {
    const BOOLS: [&str; 22] = [
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
    ];
    if BOOLS.contains(&s) {
        return true;
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let all = |d: &str, ok: fn(u8) -> bool| !d.is_empty() && d.bytes().all(ok);
    // 012345 (octal), 1_000, 0b1010, 12:30 (base 60).
    (digits.len() > 1 && digits.starts_with('0') && all(digits, |b| b.is_ascii_digit()))
        || (digits.contains('_')
            && digits.starts_with(|c: char| c.is_ascii_digit())
            && all(digits, |b| b.is_ascii_digit() || b == b'_'))
        || digits
            .strip_prefix("0b")
            .is_some_and(|d| all(d, |b| matches!(b, b'0' | b'1' | b'_')))
        || (digits.contains(':')
            && digits.starts_with(|c: char| matches!(c, '1'..='9'))
            && all(digits, |b| b.is_ascii_digit() || b == b':' || b == b'_'))
}

/// Whether `text` holds `s` as a plain scalar: after `: `, `- `, `[`, `{` or `,`, and before
/// the line's end, a comment, `,`, `]` or `}`.
fn unquoted_in(text: &str, s: &str) -> bool {
    text.lines().any(|line| {
        line.match_indices(s).any(|(i, _)| {
            let before = line
                .get(..i)
                .unwrap_or_default()
                .trim_end_matches([' ', '\t']);
            let after = line.get(i + s.len()..).unwrap_or_default();
            let after_trim = after.trim_start_matches([' ', '\t']);
            let opens = before.ends_with([':', '-', '[', '{', ',']);
            let closes = after_trim.is_empty()
                || after_trim.starts_with([',', ']', '}'])
                || (after_trim.starts_with('#') && after.len() > after_trim.len());
            opens && closes
        })
    })
}

// ---- the reference ---------------------------------------------------------------------------

/// `docs/configuration.md`: every field of the schema, as a table (CI fails when the committed
/// file is not what this makes: `token-filter reference > docs/configuration.md`).
pub fn reference(schema: &Value) -> String {
    let mut rows = Vec::new();
    fields(schema, schema, "", &mut rows);
    let mut s = String::from(
        "# Configuration reference\n\n\
         Generated from the configuration's JSON Schema (`token-filter reference`, which reads the \
         types the filter parses its configuration into): do not edit by hand. The schema itself \
         is `token-filter schema` (the release ships it as `dist/token-filter.schema.json`); \
         `token-filter check FILE...` runs the filter's own validation, which also enforces the \
         rules between fields listed at the end.\n\n\
         A field marked `[]` is a list of the type; `a.b` is field `b` of object `a`, and \
         `policies[].x` is field `x` of every policy. Unknown fields are errors.\n\n\
         | field | type | default | values | meaning |\n|---|---|---|---|---|\n",
    );
    for row in rows {
        s.push_str(&row);
        s.push('\n');
    }
    s.push_str("\nRules between fields, which the schema cannot express and `check` enforces:\n\n");
    for rule in config::SCHEMA_CANNOT_SAY {
        s.push_str(&format!("- {rule}\n"));
    }
    s
}

/// The schema `node` refers to (`$ref` into `$defs`), or itself.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/")
            .map(|p| format!("/{p}"))
            .and_then(|p| root.pointer(&p))
            .unwrap_or(node),
        None => node,
    }
}

fn fields(root: &Value, node: &Value, prefix: &str, rows: &mut Vec<String>) {
    let node = resolve(root, node);
    let Some(props) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, prop) in props {
        let path = format!("{prefix}{name}");
        // An optional object is `anyOf [its schema, null]`: look through it.
        let inner = prop
            .get("anyOf")
            .and_then(Value::as_array)
            .and_then(|alts| {
                alts.iter()
                    .find(|a| a.get("type") != Some(&Value::from("null")))
            })
            .unwrap_or(prop);
        let target = resolve(root, inner);
        let items = target.get("items").map(|i| resolve(root, i));
        let (kind, values) = describe_type(target, items);
        let default = prop
            .get("default")
            .map(|d| format!("`{d}`"))
            .unwrap_or_else(|| {
                if required.contains(&name.as_str()) {
                    "required".to_owned()
                } else {
                    "none".to_owned()
                }
            });
        let description = prop
            .get("description")
            .or_else(|| target.get("description"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .replace('\n', " ")
            .replace('|', "\\|");
        rows.push(format!(
            "| `{path}` | {kind} | {default} | {values} | {description} |"
        ));
        if target.get("properties").is_some() {
            fields(root, target, &format!("{path}."), rows);
        } else if let Some(items) = items.filter(|i| i.get("properties").is_some()) {
            fields(root, items, &format!("{path}[]."), rows);
        }
    }
}

/// A field's type, and what values it takes (range, enumeration, length, pattern).
fn describe_type(node: &Value, items: Option<&Value>) -> (String, String) {
    let types: Vec<&str> = match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    let kind = if types.contains(&"array") {
        let inner = items
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("object");
        format!("{inner}[]")
    } else if node.get("oneOf").is_some() || node.get("enum").is_some() && types.is_empty() {
        "string".to_owned()
    } else {
        types.first().copied().unwrap_or("object").to_owned()
    };
    let mut values = Vec::new();
    let enumerated = |n: &Value| -> Option<Vec<String>> {
        if let Some(e) = n.get("enum").and_then(Value::as_array) {
            return Some(e.iter().map(|v| format!("`{v}`")).collect());
        }
        n.get("oneOf").and_then(Value::as_array).map(|alts| {
            alts.iter()
                .filter_map(|a| a.get("const"))
                .map(|v| format!("`{v}`"))
                .collect()
        })
    };
    if let Some(e) = enumerated(node).or_else(|| items.and_then(enumerated)) {
        values.push(e.join(", "));
    }
    match (node.get("minimum"), node.get("maximum")) {
        (Some(lo), Some(hi)) => values.push(format!("{lo} to {hi}")),
        (Some(lo), None) => values.push(format!("at least {lo}")),
        (None, Some(hi)) => values.push(format!("at most {hi}")),
        _ => {}
    }
    let length = |lo: &str, hi: &str, unit: &str| match (node.get(lo), node.get(hi)) {
        (Some(a), Some(b)) => Some(format!("{a} to {b} {unit}")),
        (Some(a), None) => Some(format!("at least {a} {unit}")),
        (None, Some(b)) => Some(format!("at most {b} {unit}")),
        _ => None,
    };
    values.extend(length("minLength", "maxLength", "characters"));
    values.extend(length("minItems", "maxItems", "items"));
    if let Some(p) = node.get("pattern").and_then(Value::as_str) {
        values.push(format!("`{}`", p.replace('|', "\\|")));
    }
    (
        kind,
        if values.is_empty() {
            "".to_owned()
        } else {
            values.join("; ")
        },
    )
}

// ---- explain ---------------------------------------------------------------------------------

/// Bytes Envoy's shared data holds per empty slot (its key, an empty value and the map's own
/// node), measured with `bench/memory.py`.
const EMPTY_SLOT_BYTES: u64 = 90;

fn explain(file: &str, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let found = match read(file) {
        Ok(found) => found,
        Err(e) => {
            let _ = writeln!(err, "{file}: {e}");
            return e.code();
        }
    };
    if found.is_empty() {
        let _ = writeln!(err, "{file}: {NOTHING_FOUND}");
        return 1;
    }
    let mut code = 0;
    for f in &found {
        match f.validate() {
            Ok(cfg) => {
                let _ = writeln!(out, "{file}: {}\n\n{}", f.place, describe(&cfg));
            }
            Err(e) => {
                let _ = writeln!(out, "{file}: {}: {}: {}", f.place, e.field, e.message);
                code = 1;
            }
        }
    }
    code
}

/// What a configuration does, in words and tables.
pub fn describe(cfg: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Policies, in the order they are tried (the route's metadata can name one directly):\n"
    );
    let _ = writeln!(s, "| policy | matches | token | scopes | also |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (_, p) in cfg.policies.all() {
        let m = &p.matcher;
        let mut matches = Vec::new();
        match &m.path {
            Some(config::PathMatch::Exact(x)) => matches.push(format!("path = {x}")),
            Some(config::PathMatch::Prefix(x)) => matches.push(format!("path starts {x}")),
            None => {}
        }
        if !m.methods.is_empty() {
            matches.push(format!("methods {}", m.methods.join(",")));
        }
        if !m.hosts.is_empty() {
            let hosts: Vec<String> = m
                .hosts
                .iter()
                .map(|h| match h {
                    config::HostMatch::Exact(x) => x.clone(),
                    config::HostMatch::Subdomain(x) => format!("*{x}"),
                })
                .collect();
            matches.push(format!("hosts {}", hosts.join(",")));
        }
        if let Some(r) = &m.route_name {
            matches.push(format!("route {r}"));
        }
        let matches = if p.name == config::DEFAULT_POLICY {
            "everything else".to_owned()
        } else if matches.is_empty() {
            "every request".to_owned()
        } else {
            matches.join("; ")
        };
        let mut also = Vec::new();
        if p.accept_jwt {
            also.push("JWTs accepted as they are".to_owned());
        }
        if p.proof == config::ProofRule::Required {
            also.push("proof of possession required".to_owned());
        }
        if let Some(x) = &p.exchange {
            also.push(format!(
                "token exchanged for {}",
                x.audience.as_deref().unwrap_or("(no audience)")
            ));
        }
        if let Some(e) = &p.embedded {
            also.push(format!("embedded token from claim {}", e.claim));
        }
        if p.min_remaining_s > 0 {
            also.push(format!("at least {} s left", p.min_remaining_s));
        }
        if let Some(max) = p.max_lifetime_s {
            also.push(format!("issued for at most {max} s"));
        }
        if !p.claims_to_headers.is_empty() {
            let headers: Vec<&str> = p
                .claims_to_headers
                .iter()
                .map(|h| h.header.as_str())
                .collect();
            also.push(format!("claims to {}", headers.join(",")));
        }
        let scopes = if p.required_scopes.is_empty() {
            "-".to_owned()
        } else {
            p.required_scopes.join(" ")
        };
        let _ = writeln!(
            s,
            "| {} | {matches} | {} | {scopes} | {} |",
            p.name,
            p.token.name(),
            if also.is_empty() {
                "-".to_owned()
            } else {
                also.join("; ")
            }
        );
    }
    let mut paths = Vec::new();
    if let Some(split) = &cfg.split {
        if let Some(p) = &split.publish {
            paths.push(format!(
                "{} - the publish API (POST stores, DELETE revokes)",
                p.path
            ));
        }
        for p in &split.split_responses {
            paths.push(format!("{p} - token endpoint: JWTs in responses are split"));
        }
    }
    if let Some((p, _)) = crate::pipeline::gateway_jwks(cfg) {
        paths.push(format!("{p} - the gateway's JWK Set (GET)"));
    }
    if let Some(rv) = &cfg.revocation {
        if let Some(p) = &rv.path {
            paths.push(format!("{p} - the revocation API (POST)"));
        }
        for p in &rv.observe_paths {
            paths.push(format!(
                "{p} - RFC 7009 revocation, observed on its way to the token service"
            ));
        }
        if let Some(b) = &rv.backchannel_logout {
            paths.push(format!(
                "{} - OpenID Connect back-channel logout (POST)",
                b.path
            ));
        }
    }
    let _ = writeln!(
        s,
        "\nPaths the filter answers or watches (never token-checked):\n"
    );
    if paths.is_empty() {
        let _ = writeln!(s, "- none");
    }
    for p in paths {
        let _ = writeln!(s, "- {p}");
    }
    let _ = writeln!(s, "\nCalls it makes:\n");
    let mut calls = 0;
    if let Some(p) = &cfg.phantom {
        let e = &p.endpoint;
        let _ = writeln!(
            s,
            "- introspection ({}): POST {}{} on cluster {}, timeout {} ms, on a cache miss",
            p.contract.name(),
            e.authority,
            e.path,
            e.cluster,
            e.timeout_ms
        );
        calls += 1;
    }
    if let Some(x) = &cfg.token_exchange {
        let e = &x.endpoint;
        let _ = writeln!(
            s,
            "- token exchange: POST {}{} on cluster {}, timeout {} ms, per token and API",
            e.authority, e.path, e.cluster, e.timeout_ms
        );
        calls += 1;
    }
    if let Some(KeySource::Remote(j)) = cfg.verify.as_ref().map(|v| &v.keys) {
        let _ = writeln!(
            s,
            "- the JWK Set: GET {}{} on cluster {}, every {} s (one worker of the process)",
            j.authority, j.path, j.cluster, j.refresh_s
        );
        calls += 1;
    }
    if let Some(r) = cfg.split.as_ref().and_then(|s| s.remote.as_ref()) {
        let _ = writeln!(
            s,
            "- the remote split store on cluster {}, timeout {} ms, on a local miss",
            r.cluster, r.timeout_ms
        );
        calls += 1;
    }
    if calls == 0 {
        let _ = writeln!(s, "- none");
    }
    let _ = writeln!(s, "\nShared data (per Envoy process and vm_id):\n");
    let _ = writeln!(s, "| store | slots | created at start | at most |");
    let _ = writeln!(s, "|---|---|---|---|");
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    let mut reserved = 0u64;
    if cfg.phantom.is_some() {
        let n = u64::from(cfg.cache.max_entries);
        let _ = writeln!(
            s,
            "| phantom cache | {n} | none (written on use) | {} (entries of ~1 KB) |",
            mib(n * 1_100)
        );
    }
    if let Some(split) = &cfg.split {
        let n = u64::from(split.max_entries);
        reserved += n * EMPTY_SLOT_BYTES;
        let _ = writeln!(
            s,
            "| split store | {n} | {} | {} (entries of ~600 bytes) |",
            mib(n * EMPTY_SLOT_BYTES),
            mib(n * 700)
        );
    }
    if let Some(d) = &cfg.dpop {
        let n = u64::from(d.replay_entries);
        let q = u64::from(crate::storage::dpop::KeyQuota::table_slots(
            d.replay_entries,
        ));
        reserved += (n + q) * EMPTY_SLOT_BYTES;
        let _ = writeln!(
            s,
            "| DPoP replay store, key shares | {n} + {q} | {} | {} |",
            mib((n + q) * EMPTY_SLOT_BYTES),
            mib(n * 150 + q * 120)
        );
    }
    if let Some(rv) = &cfg.revocation {
        let buckets = u64::from(rv.max_marks.div_ceil(crate::storage::revocation::WAYS));
        let fixed = buckets + u64::from(crate::storage::revocation::PARTICIPANTS);
        reserved += fixed * EMPTY_SLOT_BYTES;
        let _ = writeln!(
            s,
            "| revocation marks, participants | {buckets} buckets + {} | {} | {} |",
            crate::storage::revocation::PARTICIPANTS,
            mib(fixed * EMPTY_SLOT_BYTES),
            mib(u64::from(rv.max_marks) * 49 + fixed * EMPTY_SLOT_BYTES)
        );
    }
    let _ = writeln!(
        s,
        "\nReserved when the configuration loads: about {}.",
        mib(reserved)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(args: &[&str]) -> (i32, String, String) {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&args, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap_or_default(),
            String::from_utf8(err).unwrap_or_default(),
        )
    }

    fn write(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("token-filter-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap_or_default();
        path.to_string_lossy().into_owned()
    }

    const GOOD: &str =
        r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}}"#;

    #[test]
    fn what_a_second_probe_found() {
        // Aliases that copy a large anchor many times: refused before the parser expands them.
        let anchor: Vec<String> = (0..1000).map(|i| format!("k{i}: {i}")).collect();
        let aliases = vec!["*x"; 4000].join(", ");
        let bomb = write(
            "aliases.yaml",
            &format!("a: &x {{{}}}\nb: [{aliases}]\n", anchor.join(", ")),
        );
        let (code, _, err) = run_with(&["check", &bomb]);
        assert_eq!(code, 1);
        assert!(err.contains("YAML aliases"), "{err}");
        // A few aliases, as Envoy configurations use them, are fine.
        assert!(aliases_fit("a: &c {x: 1}\nb: *c\nc: *c\n"));
        // Lines broken by CR alone are lines to the scan as to the parser.
        let cr = write("cr.yaml", &format!("# c\ra: {}\r", "[".repeat(5000)));
        let (code, _, err) = run_with(&["check", &cr]);
        assert_eq!(code, 1);
        assert!(err.contains("nested deeper"), "{err}");
        // An unknown key holding a value (`client_secret:VALUE`, a space missing) is not
        // printed.
        let leak = write(
            "leak.yaml",
            "kind: WasmPlugin\nspec:\n  pluginConfig: {phantom: {cluster: ts, path: /i, client_id: gw, client_secret:Sup3rS3cret}}\n",
        );
        let (code, out, err) = run_with(&["check", &leak]);
        assert_eq!(code, 1);
        assert!(
            !out.contains("Sup3r") && !err.contains("Sup3r"),
            "{out}{err}"
        );
        // Our module loaded from a remote URI is ours too.
        let remote = write(
            "remote.yaml",
            "static_resources:\n  listeners:\n  - filter_chains:\n    - filters:\n      - typed_config:\n          http_filters:\n          - typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n              config:\n                vm_config:\n                  code: {remote: {http_uri: {uri: \"https://x/envoy_token_filter.wasm\"}}}\n                configuration:\n                  \"@type\": type.googleapis.com/google.protobuf.StringValue\n                  value: '{\"phantom\": {\"cluster\": \"ts\"}}'\n",
        );
        assert_eq!(run_with(&["check", &remote]).0, 1);
        // `kubectl get -o yaml`: a List's items are looked into.
        let list = write(
            "list.yaml",
            "apiVersion: v1\nkind: List\nitems:\n- kind: WasmPlugin\n  spec:\n    url: oci://r/envoy-token-filter:1\n    pluginConfig: {phantom: {cluster: ts}}\n",
        );
        assert_eq!(run_with(&["check", &list]).0, 1);
        // Another vendor's plugin beside ours is not checked against our configuration.
        let other = write(
            "other.yaml",
            &format!("kind: WasmPlugin\nspec:\n  url: oci://r/envoy-token-filter:1\n  pluginConfig: {GOOD}\n---\nkind: WasmPlugin\nspec:\n  url: oci://ghcr.io/istio-ecosystem/wasm-extensions/basic_auth:1.12.0\n  pluginConfig: {{basic_auth_rules: []}}\n"),
        );
        let (code, out, _) = run_with(&["check", &other]);
        assert_eq!(code, 0, "{out}");
        // kubectl reads manifests as YAML 1.1: a plain NO is a boolean, 012345 a number.
        for (plain, want) in [
            ("realm: NO", 1),
            ("realm: \"NO\"", 0),
            ("realm: 'on'", 0),
            ("realm: on", 1),
            ("client_id: 012345", 1),
            ("client_id: \"012345\"", 0),
        ] {
            let (id, realm) = if plain.starts_with("realm") {
                ("client_id: gw", plain)
            } else {
                (plain, "realm: api")
            };
            let f = write(
                "yaml11.yaml",
                &format!("kind: WasmPlugin\nspec:\n  url: oci://r/envoy-token-filter:1\n  pluginConfig:\n    {realm}\n    phantom:\n      cluster: ts\n      path: /i\n      {id}\n      client_secret: s\n"),
            );
            let (code, out, err) = run_with(&["check", &f]);
            assert_eq!(code, want, "{plain}: {out}{err}");
        }
    }

    fn aliases_fit(text: &str) -> bool {
        text.len() * (aliases(text) + 1) <= MAX_EXPANDED_BYTES && aliases(text) == 2
    }

    #[test]
    fn a_json_plugin_configuration_is_checked_and_values_never_printed() {
        let good = write("good.json", GOOD);
        assert_eq!(run_with(&["check", &good]).0, 0);
        // A secret given as a number: the field is named, the value never printed.
        let bad = write(
            "bad.json",
            r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": 98765432123}}"#,
        );
        let (code, out, _) = run_with(&["check", &good, &bad]);
        assert_eq!(code, 1);
        assert!(
            out.contains(&format!(
                "{bad}: plugin configuration: phantom.client_secret: "
            )),
            "{out}"
        );
        assert!(!out.contains("98765432123"), "{out}");
        let unreadable = write("broken.json", "{ nope");
        let (code, _, err) = run_with(&["check", &unreadable]);
        assert_eq!(code, 2, "{err}");
        assert_eq!(run_with(&["check", "/nonexistent/file.yaml"]).0, 2);
        assert_eq!(run_with(&["check"]).0, 2, "usage");
    }

    #[test]
    fn manifests_are_checked_document_by_document() {
        let yaml = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: a, namespace: n}\n\
             spec:\n  pluginConfig:\n    phantom: {cluster: ts, path: /i, client_id: gw, client_secret: s}\n\
             ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n\
             ---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: EnvoyExtensionPolicy\nmetadata: {name: b}\n\
             spec:\n  wasm:\n  - config:\n      phantom: {cluster: ts, path: i, client_id: gw, client_secret: s}\n";
        let file = write("m.yaml", yaml);
        let (code, out, _) = run_with(&["check", &file]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("document 1 (WasmPlugin n/a): spec.pluginConfig: valid"),
            "{out}"
        );
        assert!(
            out.contains("document 3 (EnvoyExtensionPolicy b): spec.wasm[0].config: phantom.path: must start with '/'"),
            "{out}"
        );
    }

    #[test]
    fn envoy_configurations_are_looked_into() {
        let envoy = format!(
            "static_resources:\n  listeners:\n  - name: l\n    filter_chains:\n    - filters:\n      - typed_config:\n          http_filters:\n          - typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n              config:\n                root_id: token_filter\n                configuration:\n                  \"@type\": type.googleapis.com/google.protobuf.StringValue\n                  value: '{}'\n",
            r#"{"phantom": {"cluster": "ts", "path": "/i", "client_id": "gw", "client_secret": "s"}, "revocation": {"path": "/_r", "secret": "0123456789abcdef0"}}"#
        );
        let file = write("envoy.yaml", &envoy);
        let (code, out, _) = run_with(&["check", &file]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.config: valid"), "{out}");
        assert!(
            out.contains("allow_on_headers_stop_iteration"),
            "a warning: {out}"
        );
        let (code, out, _) = run_with(&["explain", &file]);
        assert_eq!(code, 0);
        assert!(out.contains("/_r - the revocation API"), "{out}");
        assert!(
            out.contains("| default | everything else | required |"),
            "{out}"
        );
    }

    /// An Envoy bootstrap (YAML in flow style) with one Wasm HTTP filter whose `config` is
    /// `config` (JSON), and where `check` reports it.
    fn bootstrap(config: &str) -> (String, &'static str) {
        (
            format!(
                "static_resources: {{listeners: [{{name: l, filter_chains: [{{filters: [{{typed_config: \
                 {{http_filters: [{{typed_config: {{\"@type\": \
                 type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm, config: {config}}}}}]}}}}]}}]}}]}}\n"
            ),
            "document 1: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.\
             http_filters[0].typed_config.config",
        )
    }

    #[test]
    fn a_wasm_filter_of_ours_whose_configuration_the_filter_cannot_read_is_an_error() {
        let good = serde_json::to_string(GOOD).unwrap_or_default();
        let cases = [
            // A Struct reaches the filter as protobuf bytes: refused however valid its content.
            (
                "struct",
                format!(
                    r#"{{"root_id": "token_filter", "configuration": {{"@type": "type.googleapis.com/google.protobuf.Struct", "value": {GOOD}}}}}"#
                ),
                "configuration: is a google.protobuf.Struct: Envoy hands the filter its protobuf encoding",
            ),
            // The JSON written as a YAML map under a StringValue (the quotes forgotten).
            (
                "unquoted",
                format!(
                    r#"{{"root_id": "token_filter", "configuration": {{"@type": "type.googleapis.com/google.protobuf.StringValue", "value": {GOOD}}}}}"#
                ),
                "configuration.value: is a map, not a string",
            ),
            // No configuration: the filter starts with an empty one and refuses it.
            (
                "missing",
                r#"{"root_id": "token_filter"}"#.to_owned(),
                "configuration: missing: Envoy gives the filter an empty configuration",
            ),
            // Known by its module file rather than its root_id.
            (
                "missing, by file name",
                r#"{"vm_config": {"code": {"local": {"filename": "/etc/envoy_token_filter.wasm"}}}}"#
                    .to_owned(),
                "configuration: missing",
            ),
            // The JSON text where an Any belongs: Envoy refuses it.
            (
                "a bare string",
                format!(r#"{{"root_id": "token_filter", "configuration": {good}}}"#),
                "configuration: is a string, not a google.protobuf.Any",
            ),
            (
                "no @type",
                format!(r#"{{"root_id": "token_filter", "configuration": {{"value": {good}}}}}"#),
                "configuration: has no \"@type\"",
            ),
        ];
        for (name, config, expected) in cases {
            let (yaml, place) = bootstrap(&config);
            let file = write(
                &format!("cannot-read-{}.yaml", name.replace([' ', ','], "-")),
                &yaml,
            );
            let (code, out, err) = run_with(&["check", &file]);
            assert_eq!(code, 1, "{name}: {out}{err}");
            assert!(
                out.contains(&format!("{file}: {place}: {expected}")),
                "{name}: {out}"
            );
            assert!(
                !out.contains("client_secret"),
                "{name}: no value printed: {out}"
            );
        }
    }

    #[test]
    fn a_bytes_value_configuration_is_read_as_envoy_reads_it() {
        // Envoy unpacks a BytesValue as it does a StringValue: the filter gets the bytes.
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(GOOD);
        let (yaml, place) = bootstrap(&format!(
            r#"{{"root_id": "token_filter", "configuration": {{"@type": "type.googleapis.com/google.protobuf.BytesValue", "value": "{encoded}"}}}}"#
        ));
        let file = write("bytes-value.yaml", &yaml);
        let (code, out, _) = run_with(&["check", &file]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("{file}: {place}: valid")), "{out}");
    }

    #[test]
    fn a_typed_struct_wrapped_filter_is_checked_like_the_filter_itself() {
        // How an Istio EnvoyFilter often inserts a Wasm filter: Envoy turns the TypedStruct's
        // `value` into the Wasm message, so `value.config.configuration` is a StringValue.
        let envoy_filter = |wrapper: &str, path: &str| {
            format!(
                "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {{name: tf, namespace: ns}}\n\
                 spec:\n  configPatches:\n  - applyTo: HTTP_FILTER\n    patch:\n      operation: INSERT_BEFORE\n      value:\n\
                 \x20       name: envoy.filters.http.wasm\n        typed_config:\n\
                 \x20         \"@type\": type.googleapis.com/{wrapper}\n\
                 \x20         type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n\
                 \x20         value:\n            config:\n              root_id: token_filter\n\
                 \x20             configuration:\n\
                 \x20               \"@type\": type.googleapis.com/google.protobuf.StringValue\n\
                 \x20               value: '{{\"phantom\": {{\"cluster\": \"ts\", \"path\": \"{path}\", \"client_id\": \"gw\", \"client_secret\": \"s\"}}}}'\n"
            )
        };
        let place = "document 1: spec.configPatches[0].patch.value.typed_config.value.config";
        for wrapper in ["udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"] {
            let good = write("typed-struct-good.yaml", &envoy_filter(wrapper, "/i"));
            let (code, out, _) = run_with(&["check", &good]);
            assert_eq!(code, 0, "{wrapper}: {out}");
            assert!(
                out.contains(&format!("{good}: {place}: valid")),
                "{wrapper}: {out}"
            );
            let bad = write("typed-struct-bad.yaml", &envoy_filter(wrapper, "no-slash"));
            let (code, out, _) = run_with(&["check", &bad]);
            assert_eq!(code, 1, "{wrapper}: {out}");
            assert!(
                out.contains(&format!(
                    "{bad}: {place}: phantom.path: must start with '/'"
                )),
                "{wrapper}: {out}"
            );
        }
    }

    #[test]
    fn a_manifest_without_the_configuration_is_an_error() {
        // Istio and Envoy Gateway then give the filter an empty configuration: it refuses it.
        let yaml = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: a, namespace: n}\n\
             spec:\n  url: oci://registry.example.com/envoy-token-filter:0.1.0\n\
             ---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: EnvoyExtensionPolicy\nmetadata: {name: b}\n\
             spec:\n  wasm:\n  - name: token-filter\n    rootID: token_filter\n";
        let file = write("no-plugin-config.yaml", yaml);
        let (code, out, _) = run_with(&["check", &file]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(&format!(
                "{file}: document 1 (WasmPlugin n/a): spec.pluginConfig: configuration: missing: Istio"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "{file}: document 2 (EnvoyExtensionPolicy b): spec.wasm[0].config: configuration: missing: Envoy Gateway"
            )),
            "{out}"
        );
    }

    #[test]
    fn a_file_with_nothing_of_ours_is_an_error() {
        let cases = [
            ("empty", ""),
            ("a scalar", "42\n"),
            ("a JSON list", r#"[{"phantom": {"cluster": "ts"}}]"#),
            ("comments only", "# nothing here\n"),
            ("another kind", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"),
            // An Envoy Wasm filter loading another module (or a misspelt root_id).
            (
                "another Wasm filter",
                "static_resources: {listeners: [{filter_chains: [{filters: [{typed_config: {http_filters: \
                 [{typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm, \
                 config: {root_id: token-filter, configuration: {\"@type\": \
                 type.googleapis.com/google.protobuf.StringValue, value: '{}'}}}}]}}]}]}]}\n",
            ),
            ("an EnvoyExtensionPolicy whose wasm is not a list", "kind: EnvoyExtensionPolicy\nspec:\n  wasm: {config: {phantom: 1}}\n"),
        ];
        for (name, text) in cases {
            let file = write(&format!("nothing-{}.yaml", name.replace(' ', "-")), text);
            let (code, out, _) = run_with(&["check", &file]);
            assert_eq!(code, 1, "{name}: {out}");
            assert!(
                out.contains(&format!("{file}: no token filter configuration found")),
                "{name}: {out}"
            );
        }
        // A file of several documents is fine as long as one is ours; another file with
        // nothing still fails the run.
        let mixed = write(
            "ours-and-others.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n\
             kind: WasmPlugin\nmetadata: {name: b}\nspec:\n  pluginConfig:\n    phantom: {cluster: ts, path: /i, client_id: gw, client_secret: s}\n",
        );
        assert_eq!(run_with(&["check", &mixed]).0, 0);
        let none = write("nothing-at-all.yaml", "apiVersion: v1\nkind: ConfigMap\n");
        assert_eq!(run_with(&["check", &mixed, &none]).0, 1);
        assert_eq!(run_with(&["explain", &none]).0, 1);
    }

    #[test]
    fn a_nan_or_an_infinity_in_a_configuration_is_an_error() {
        // Converted to JSON, `.nan` became `null`, which an optional field takes as its default.
        let cases = [
            ("nan", ".nan", "30", "phantom.timeout_ms"),
            ("inf", ".inf", "30", "phantom.timeout_ms"),
            ("minus inf", "-.Inf", "30", "phantom.timeout_ms"),
            (
                "in a list",
                "2000",
                ".NaN",
                "policies[0].min_remaining_lifetime_s",
            ),
        ];
        for (name, timeout, remaining, expected) in cases {
            let cfg = format!(
                "{{phantom: {{cluster: ts, path: /i, client_id: gw, client_secret: s, \
                 timeout_ms: {timeout}}}, policies: [{{name: a, min_remaining_lifetime_s: {remaining}}}]}}"
            );
            let yaml = format!(
                "kind: WasmPlugin\nmetadata: {{name: a}}\nspec:\n  pluginConfig: {cfg}\n---\n\
                 kind: EnvoyExtensionPolicy\nmetadata: {{name: b}}\nspec:\n  wasm:\n  - config: {cfg}\n"
            );
            let file = write(&format!("nan-{}.yaml", name.replace(' ', "-")), &yaml);
            let (code, out, _) = run_with(&["check", &file]);
            assert_eq!(code, 1, "{name}: {out}");
            for place in [
                "document 1 (WasmPlugin a): spec.pluginConfig",
                "document 2 (EnvoyExtensionPolicy b): spec.wasm[0].config",
            ] {
                assert!(
                    out.contains(&format!("{file}: {place}: {expected}: is .nan or .inf")),
                    "{name}: {out}"
                );
            }
        }
        // A finite float where an integer belongs stays the parser's error.
        let file = write(
            "float.yaml",
            "kind: WasmPlugin\nspec:\n  pluginConfig: {phantom: {cluster: ts, path: /i, client_id: gw, client_secret: s, timeout_ms: 2.5}}\n",
        );
        let (code, out, _) = run_with(&["check", &file]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("phantom.timeout_ms: invalid type"), "{out}");
    }

    #[test]
    fn deep_nesting_is_refused_quickly_before_parsing() {
        // libyaml's scanner is quadratic in flow depth: 20,000 levels took a second, 100,000
        // took 28 s (release build), only to fail as "not YAML" (exit 2).
        let n = 100_000;
        let cases = [
            ("yaml", format!("a: {}{}\n", "[".repeat(n), "]".repeat(n))),
            (
                "json",
                format!("{{\"phantom\": {}{}}}", "[".repeat(n), "]".repeat(n)),
            ),
            (
                "yaml, a flow map",
                format!("a: {}1{}\n", "{a: ".repeat(n), "}".repeat(n)),
            ),
        ];
        for (name, text) in cases {
            let file = write(
                &format!("deep-{}.yaml", name.replace([' ', ','], "-")),
                &text,
            );
            let started = std::time::Instant::now();
            let (code, out, err) = run_with(&["check", &file]);
            assert!(
                started.elapsed().as_secs() < 5,
                "{name}: {:?}",
                started.elapsed()
            );
            assert_eq!(code, 1, "{name}: {out}{err}");
            assert!(
                err.contains(&format!(
                    "{file}: nested deeper than 64 levels at line 1 column"
                )),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn nesting_by_indentation_is_bounded_too() {
        // Block nesting costs the parser nothing extra; it is refused once parsed (70 levels)
        // or when serde_yaml stops at its own 128 (200 levels, which was "not YAML", exit 2).
        let block = |n: usize| {
            let mut s: String = (0..n).map(|i| format!("{}a:\n", "  ".repeat(i))).collect();
            s.push_str(&format!("{}b: 1\n", "  ".repeat(n)));
            s
        };
        for n in [70, 200] {
            let file = write(&format!("block-{n}.yaml"), &block(n));
            let (code, out, err) = run_with(&["check", &file]);
            assert_eq!(code, 1, "{n}: {out}{err}");
            assert!(
                err.contains(&format!("{file}: nested deeper than 64 levels (document 1")),
                "{n}: {err}"
            );
        }
        // 64 levels in all (a map, 63 lists) are fine as far as nesting goes.
        let ok = format!("a: {}{}\n", "[".repeat(63), "]".repeat(63));
        assert!(find(&ok).is_ok());
        let deep = format!("a: {}{}\n", "[".repeat(64), "]".repeat(64));
        assert!(matches!(find(&deep), Err(FileError::Refused(_))));
    }

    #[test]
    fn a_file_larger_than_4_mib_is_refused_unread() {
        // A valid manifest padded with a comment past the bound.
        let text = format!(
            "kind: WasmPlugin\nspec:\n  pluginConfig:\n    phantom: {{cluster: ts, path: /i, client_id: gw, client_secret: s}}\n# {}\n",
            "x".repeat(MAX_FILE_BYTES)
        );
        let file = write("large.yaml", &text);
        let (code, out, err) = run_with(&["check", &file]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains(&format!("{file}: larger than 4 MiB: refused unread")),
            "{err}"
        );
        assert!(out.is_empty(), "{out}");
        std::fs::remove_file(&file).unwrap_or_default();
    }

    #[test]
    fn the_scan_before_parsing_counts_only_real_collections() {
        let n = 100;
        let (open, close) = ("[".repeat(n), "]".repeat(n));
        // Brackets that are text: none of these is refused.
        let text = [
            ("single-quoted", format!("a: '{open} it''s'\nb: [1]\n")),
            (
                "double-quoted",
                format!("a: \"{open} \\\" {open}\"\nb: [1]\n"),
            ),
            (
                "a quoted scalar over lines",
                format!("a: \"x\n  {open}\n  y\"\nb: [1]\n"),
            ),
            (
                "a block scalar",
                format!("a: |\n  {open}\n  \"\n\n  it's\nb: [1]\n"),
            ),
            (
                "a folded block scalar in a list",
                format!("- >-\n  {open}\n- [1]\n"),
            ),
            ("a comment", format!("a: 1 # {open}\n# {open}\nb: [1]\n")),
            ("a plain scalar", format!("path: /a{open}\nb: x, {open}\n")),
            (
                "a plain scalar over lines",
                format!("a: x\n  {open}\nb: [1]\n"),
            ),
            (
                "a string in JSON",
                format!("{{\"a\": \"{open}\", \"b\": [1]}}"),
            ),
            ("a quoted key", format!("\"{open}\": 1\n")),
        ];
        for (name, t) in &text {
            assert_eq!(flow_too_deep(t, 64), None, "{name}");
        }
        // Collections: each of these is.
        let collections = [
            ("JSON", format!("{{\"a\":{open}{close}}}")),
            ("a value", format!("a: {open}{close}\n")),
            ("a list item", format!("- {open}{close}\n")),
            (
                "after a tag and an anchor",
                format!("a: !t &x {open}{close}\n"),
            ),
            ("after a document marker", format!("--- {open}{close}\n")),
            (
                "a flow map",
                format!("a: {}1{}\n", "{b: ".repeat(n), "}".repeat(n)),
            ),
            ("over lines", format!("a: [\n{}\n]\n", "[\n".repeat(n))),
            ("after a quoted key", format!("\"a\": {open}{close}\n")),
            (
                "after a block scalar",
                format!("a: |\n  text\nb: {open}{close}\n"),
            ),
            (
                "after a quoted scalar",
                format!("a: \"x\ny\"\nb: {open}{close}\n"),
            ),
            ("after a comment", format!("# it's\nb: {open}{close}\n")),
            ("after a plain scalar", format!("a: x\nb: {open}{close}\n")),
            (
                "after a byte order mark",
                format!("\u{feff}{open}{close}\n"),
            ),
            // libyaml stops a quoted scalar at a document marker.
            (
                "after a quote cut by a document",
                format!("a: \"x\n--- {open}{close}\n"),
            ),
        ];
        for (name, t) in &collections {
            assert!(flow_too_deep(t, 64).is_some(), "{name}");
        }
    }

    #[test]
    fn every_example_file_passes_the_bounds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["envoy", "deploy/istio", "deploy/envoy-gateway"] {
            for entry in std::fs::read_dir(root.join(dir))
                .into_iter()
                .flatten()
                .flatten()
            {
                if entry.path().extension().is_some_and(|e| e == "yaml") {
                    files.push(entry.path());
                }
            }
        }
        assert!(files.len() >= 16, "{files:?}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            assert_eq!(flow_too_deep(&text, 64), None, "{}", f.display());
            assert!(find(&text).is_ok(), "{}", f.display());
        }
    }

    #[test]
    fn the_committed_reference_is_what_the_schema_makes() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == reference(&config::schema()),
            "docs/configuration.md is not what the schema makes: run \
             `cargo run --features cli --bin token-filter -- reference > docs/configuration.md`"
        );
    }

    #[test]
    fn the_schema_is_draft_2020_12() {
        let (code, out, _) = run_with(&["schema"]);
        assert_eq!(code, 0);
        let schema: Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert!(schema["properties"]["phantom"].is_object());
    }
}
