//! The deployment manifests in `deploy/` can never ship a configuration the filter refuses:
//! every Istio `WasmPlugin`'s `pluginConfig` and every Envoy Gateway `EnvoyExtensionPolicy`
//! Wasm `config` goes through the filter's own validation, and each manifest's structure is
//! checked against what Istio and Envoy Gateway document (apiVersion, kind, required fields,
//! enum values).

// Test code: a failed read or a refused configuration is a failed check.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::{Path, PathBuf};

use envoy_token_filter::config::Config;
use serde_yaml::Value;

fn manifests() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let text = fs::read_to_string(&path).unwrap();
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    let value = Value::deserialize(doc)
                        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
                    out.push((path.clone(), value));
                }
            }
        }
    }
    out
}

use serde::Deserialize as _;

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

/// The filter's validation of a configuration given as YAML (as Istio and Envoy Gateway hand
/// it over: JSON).
fn filter_accepts(where_: &str, config: &Value) {
    let json = serde_json::to_vec(config).unwrap();
    if let Err(e) = Config::from_slice(&json) {
        panic!("{where_}: the filter refuses this configuration: {e}");
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[test]
fn every_manifest_is_well_formed_and_its_filter_configuration_valid() {
    let docs = manifests();
    let (mut plugins, mut policies, mut underscores) = (0, 0, 0);
    for (path, doc) in &docs {
        let at = path.display().to_string();
        let kind = str_at(doc, &["kind"]).unwrap_or_else(|| panic!("{at}: no kind"));
        let api = str_at(doc, &["apiVersion"]).unwrap_or_else(|| panic!("{at}: no apiVersion"));
        assert!(
            str_at(doc, &["metadata", "name"]).is_some(),
            "{at}: no metadata.name"
        );
        let spec = doc.get("spec").unwrap_or_else(|| panic!("{at}: no spec"));
        match kind {
            // istio.io/latest/docs/reference/config/proxy_extensions/wasm-plugin/
            "WasmPlugin" => {
                plugins += 1;
                assert_eq!(api, "extensions.istio.io/v1alpha1", "{at}");
                assert!(
                    spec.get("selector").is_some() || spec.get("targetRefs").is_some(),
                    "{at}: selector or targetRefs"
                );
                let url = str_at(spec, &["url"]).unwrap_or_else(|| panic!("{at}: no url"));
                assert!(url.starts_with("oci://"), "{at}: url {url}");
                assert!(
                    str_at(spec, &["sha256"]).is_some_and(is_sha256),
                    "{at}: sha256"
                );
                assert_eq!(str_at(spec, &["phase"]), Some("AUTHN"), "{at}: phase");
                assert_eq!(str_at(spec, &["failStrategy"]), Some("FAIL_CLOSE"), "{at}");
                if let Some(p) = str_at(spec, &["imagePullPolicy"]) {
                    assert!(["IfNotPresent", "Always"].contains(&p), "{at}: {p}");
                }
                let config = spec
                    .get("pluginConfig")
                    .unwrap_or_else(|| panic!("{at}: no pluginConfig"));
                filter_accepts(&at, config);
            }
            // gateway.envoyproxy.io/docs/api/extension_types/#envoyextensionpolicy
            "EnvoyExtensionPolicy" => {
                policies += 1;
                assert_eq!(api, "gateway.envoyproxy.io/v1alpha1", "{at}");
                assert!(spec.get("targetRefs").is_some(), "{at}: targetRefs");
                let wasm = spec
                    .get("wasm")
                    .and_then(Value::as_sequence)
                    .unwrap_or_else(|| panic!("{at}: no wasm"));
                for w in wasm {
                    assert_eq!(str_at(w, &["rootID"]), Some("token_filter"), "{at}: rootID");
                    assert_eq!(
                        w.get("failOpen").and_then(Value::as_bool),
                        Some(false),
                        "{at}"
                    );
                    assert_eq!(
                        str_at(w, &["code", "type"]),
                        Some("Image"),
                        "{at}: code.type"
                    );
                    assert!(
                        str_at(w, &["code", "image", "url"]).is_some(),
                        "{at}: image.url"
                    );
                    assert!(
                        str_at(w, &["code", "image", "sha256"]).is_some_and(is_sha256),
                        "{at}: image.sha256"
                    );
                    filter_accepts(&at, w.get("config").expect("config"));
                }
            }
            "EnvoyPatchPolicy" => assert_eq!(api, "gateway.envoyproxy.io/v1alpha1", "{at}"),
            // Header names with `_` refused at the edge (the filter owns `x-user-id`; some
            // servers read `x_user_id` as it).
            "ClientTrafficPolicy" => {
                underscores += 1;
                assert_eq!(api, "gateway.envoyproxy.io/v1alpha1", "{at}");
                assert_eq!(
                    str_at(spec, &["headers", "withUnderscoresAction"]),
                    Some("RejectRequest"),
                    "{at}"
                );
            }
            "EnvoyFilter" => {
                underscores += 1;
                assert_eq!(api, "networking.istio.io/v1alpha3", "{at}");
                let patches = spec
                    .get("configPatches")
                    .and_then(Value::as_sequence)
                    .unwrap_or_else(|| panic!("{at}: no configPatches"));
                assert!(
                    patches.iter().all(|p| str_at(
                        p,
                        &[
                            "patch",
                            "value",
                            "typed_config",
                            "common_http_protocol_options",
                            "headers_with_underscores_action"
                        ]
                    ) == Some("REJECT_REQUEST")),
                    "{at}"
                );
            }
            "ServiceEntry" | "DestinationRule" | "Gateway" => {
                assert_eq!(api, "networking.istio.io/v1", "{at}");
            }
            "AuthorizationPolicy" => {
                assert_eq!(api, "security.istio.io/v1", "{at}");
                let action = str_at(spec, &["action"]).unwrap_or("ALLOW");
                assert!(
                    ["ALLOW", "DENY", "AUDIT", "CUSTOM"].contains(&action),
                    "{at}"
                );
            }
            other => panic!("{at}: unexpected kind {other}"),
        }
    }
    assert!(
        plugins >= 2 && policies >= 1,
        "the phantom and split WasmPlugins, and Envoy Gateway's"
    );
    assert!(
        underscores >= 2,
        "Istio's and Envoy Gateway's refusal of header names with `_`"
    );
}

#[test]
fn the_istio_cluster_names_follow_the_outbound_form() {
    // A sidecar names the cluster of a service outbound|<port>||<host>: the token service's
    // calls go through the sidecar's own cluster.
    for (path, doc) in manifests() {
        if str_at(&doc, &["kind"]) != Some("WasmPlugin") {
            continue;
        }
        let config = &doc["spec"]["pluginConfig"];
        for cluster in [
            str_at(config, &["phantom", "cluster"]),
            str_at(config, &["verify", "jwks", "cluster"]),
        ]
        .into_iter()
        .flatten()
        {
            let parts: Vec<&str> = cluster.split('|').collect();
            assert!(
                parts.len() == 4
                    && parts[0] == "outbound"
                    && parts[1].parse::<u16>().is_ok()
                    && parts[2].is_empty()
                    && !parts[3].is_empty(),
                "{}: {cluster} is not outbound|PORT||HOST",
                path.display()
            );
        }
    }
}

/// Every Wasm filter in `value`, with where it is: the `config` of each
/// `envoy.extensions.filters.http.wasm.v3.Wasm`.
fn wasm_filters<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Mapping(m) => {
            let is_wasm = m
                .get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("envoy.extensions.filters.http.wasm.v3.Wasm"));
            if is_wasm {
                if let Some(config) = m.get("config") {
                    out.push(config);
                }
            }
            for v in m.values() {
                wasm_filters(v, out);
            }
        }
        Value::Sequence(s) => {
            for v in s {
                wasm_filters(v, out);
            }
        }
        _ => {}
    }
}

/// The example Envoy configurations (`envoy/*.yaml`, which CI also runs through
/// `envoy --mode validate`): every plugin configuration is one the filter takes, and a filter
/// that reads request or response bodies (publish, split responses, revocation) lets it
/// (`allow_on_headers_stop_iteration`).
#[test]
fn every_example_envoy_configuration_is_one_the_filter_takes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let value: Value = serde_yaml::from_str(&text).unwrap();
        let mut filters = Vec::new();
        wasm_filters(&value, &mut filters);
        assert!(!filters.is_empty(), "{}: no Wasm filter", path.display());
        for config in filters {
            let json = str_at(config, &["configuration", "value"])
                .unwrap_or_else(|| panic!("{}: no plugin configuration", path.display()));
            let cfg = Config::from_slice(json.as_bytes())
                .unwrap_or_else(|e| panic!("{}: refused: {e}", path.display()));
            let reads_bodies = cfg
                .split
                .as_ref()
                .is_some_and(|s| s.publish.is_some() || !s.split_responses.is_empty())
                || cfg.revocation.is_some();
            if reads_bodies {
                assert_eq!(
                    config
                        .get("allow_on_headers_stop_iteration")
                        .and_then(Value::as_bool),
                    Some(true),
                    "{}: the filter reads bodies: allow_on_headers_stop_iteration: true",
                    path.display()
                );
            }
            seen += 1;
        }
    }
    assert!(seen >= 9, "{seen} plugin configurations");
}
