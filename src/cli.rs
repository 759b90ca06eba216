//! The `token-filter` command (feature `cli`, never in the `.wasm`): the filter's own validation
//! run before a configuration reaches a gateway.
//!
//! - `check FILE...`: every filter configuration in each file, whatever holds it (a plugin
//!   configuration as JSON, an Istio `WasmPlugin`, an Envoy Gateway `EnvoyExtensionPolicy`, an
//!   Envoy bootstrap or listener), validated exactly as `on_configure` does; each error printed
//!   as `FILE: <where>: field: message`, never a value. Exit 0: all valid; 1: any refused; 2: a
//!   file that cannot be read or parsed.
//! - `schema`: the configuration's JSON Schema (draft 2020-12).
//! - `explain FILE`: what a configuration does: its policies in order, the paths the filter
//!   answers, the calls it makes, the stores and the memory they reserve at start.

use std::fmt::Write as _;
use std::io::Write;

use serde_json::Value;

use crate::config::{self, Config, KeySource};

/// The module's file name: an Envoy Wasm filter loading it is one of ours.
const MODULE_FILE: &str = "envoy_token_filter.wasm";
/// The `root_id` this filter's configurations use.
const ROOT_ID: &str = "token_filter";

/// One filter configuration found in a file, and where.
pub struct Found {
    /// Where in the file (`document 2 (WasmPlugin orders/token-filter): spec.pluginConfig`).
    pub place: String,
    /// The configuration as the filter receives it (JSON text).
    pub json: String,
    /// Envoy's Wasm filter config: whether it lets the filter read bodies
    /// (`allow_on_headers_stop_iteration`); `None` where the platform decides (Istio, Envoy
    /// Gateway).
    pub reads_bodies: Option<bool>,
}

/// Why a file could not be looked at.
#[derive(Debug)]
pub struct Unreadable(pub String);

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
            Err(Unreadable(why)) => {
                let _ = writeln!(err, "{file}: {why}");
                code = 2;
                continue;
            }
        };
        if found.is_empty() {
            let _ = writeln!(out, "{file}: no token filter configuration in it");
            continue;
        }
        for f in &found {
            match Config::from_slice(f.json.as_bytes()) {
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

/// Every filter configuration in `file`.
pub fn read(file: &str) -> Result<Vec<Found>, Unreadable> {
    let text =
        std::fs::read_to_string(file).map_err(|e| Unreadable(format!("cannot read: {e}")))?;
    find(&text)
}

/// Every filter configuration in a file's text: a JSON plugin configuration, or YAML documents.
pub fn find(text: &str) -> Result<Vec<Found>, Unreadable> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Unreadable(format!("not JSON: {}", crate::json_error::describe(&e))))?;
        // A bootstrap written as JSON is looked into like a YAML one.
        if value.get("static_resources").is_some() || value.get("apiVersion").is_some() {
            let mut out = Vec::new();
            in_document(&value, "", &mut out);
            return Ok(out);
        }
        return Ok(vec![Found {
            place: "plugin configuration".to_owned(),
            json: text.to_owned(),
            reads_bodies: None,
        }]);
    }
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let yaml = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).map_err(|e| {
            let at = e.location().map_or_else(String::new, |l| {
                format!(" at line {} column {}", l.line(), l.column())
            });
            Unreadable(format!("document {}: not YAML{at}", i + 1))
        })?;
        if yaml.is_null() {
            continue;
        }
        let value = serde_json::to_value(&yaml)
            .map_err(|_| Unreadable(format!("document {}: not representable as JSON", i + 1)))?;
        in_document(&value, &format!("document {}", i + 1), &mut out);
    }
    Ok(out)
}

fn in_document(doc: &Value, label: &str, out: &mut Vec<Found>) {
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
        "WasmPlugin" => {
            if let Some(cfg) = doc.pointer("/spec/pluginConfig") {
                out.push(Found {
                    place: format!(
                        "{}: spec.pluginConfig",
                        prefix(&format!("WasmPlugin {who}"))
                    ),
                    json: cfg.to_string(),
                    reads_bodies: None,
                });
            }
        }
        "EnvoyExtensionPolicy" => {
            let wasm = doc.pointer("/spec/wasm").and_then(Value::as_array);
            for (i, w) in wasm.into_iter().flatten().enumerate() {
                if let Some(cfg) = w.get("config") {
                    out.push(Found {
                        place: format!(
                            "{}: spec.wasm[{i}].config",
                            prefix(&format!("EnvoyExtensionPolicy {who}"))
                        ),
                        json: cfg.to_string(),
                        reads_bodies: None,
                    });
                }
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
                let Some(json) = plugin_configuration(config) else {
                    return;
                };
                out.push(Found {
                    place,
                    json,
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
/// `token_filter`), anywhere in `value`: `found(where, config)`.
fn envoy_filters(value: &Value, path: &mut Vec<String>, found: &mut dyn FnMut(&str, &Value)) {
    match value {
        Value::Object(map) => {
            let is_wasm = map
                .get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("envoy.extensions.filters.http.wasm.v3.Wasm"));
            if is_wasm {
                if let Some(config) = map.get("config") {
                    if is_ours(config) {
                        let at = format!("{}.config", path.join("."));
                        found(&at, config);
                    }
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

fn is_ours(config: &Value) -> bool {
    let root = config.get("root_id").and_then(Value::as_str) == Some(ROOT_ID);
    let file = config
        .pointer("/vm_config/code/local/filename")
        .and_then(Value::as_str)
        .is_some_and(|f| f.ends_with(MODULE_FILE));
    root || file
}

/// The plugin configuration of an Envoy Wasm filter config: a `StringValue`'s `value`, or a
/// string.
fn plugin_configuration(config: &Value) -> Option<String> {
    match config.get("configuration")? {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("value").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
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
        Err(Unreadable(why)) => {
            let _ = writeln!(err, "{file}: {why}");
            return 2;
        }
    };
    if found.is_empty() {
        let _ = writeln!(err, "{file}: no token filter configuration in it");
        return 1;
    }
    let mut code = 0;
    for f in &found {
        match Config::from_slice(f.json.as_bytes()) {
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
