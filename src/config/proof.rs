//! `dpop`, `mtls` and `proof`: proof of possession (RFC 9449 DPoP, RFC 8705 certificate-bound
//! tokens). A token bound to a key (`cnf`) is always enforced, whatever these say; they say how
//! proofs are checked, and whether unbound tokens are accepted (`proof`).

use serde::Deserialize;

use super::checks::*;
use super::*;
use crate::token::dpop;
use crate::token::jws::Alg;

/// The algorithms a DPoP proof may use: those the filter verifies with a key the proof carries.
pub const DPOP_ALGORITHMS: [Alg; 4] = [Alg::Es256, Alg::EdDsa, Alg::Rs256, Alg::Ps256];
/// Default `dpop.max_age_s`.
pub const DEFAULT_DPOP_MAX_AGE_S: u64 = 300;
/// Default `dpop.clock_skew_s`.
pub const DEFAULT_DPOP_CLOCK_SKEW_S: u64 = 5;
/// Default `dpop.replay_entries`.
pub const DEFAULT_REPLAY_ENTRIES: u32 = 100_000;
/// Largest `dpop.replay_entries`: every slot is created when the configuration loads.
pub const MAX_REPLAY_ENTRIES: u32 = 2_000_000;

/// DPoP proofs (RFC 9449).
#[derive(Deserialize)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawDpop {
    /// Proof algorithms (`Ed25519` is accepted for `EdDSA`); never `none` or HMAC.
    #[cfg_attr(feature = "cli", schemars(extend("items" = {"type": "string", "enum": ["ES256", "EdDSA", "Ed25519", "RS256", "PS256"]})))]
    algorithms: Option<Vec<String>>,
    /// Oldest proof accepted (its `iat`), in seconds.
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 3600), extend("default" = 300)))]
    max_age_s: Option<u64>,
    /// Tolerance on `iat`, both ways, in seconds.
    #[cfg_attr(feature = "cli", schemars(range(min = 0, max = 300), extend("default" = 5)))]
    clock_skew_s: Option<u64>,
    /// Slots of the replay store shared by every worker (one store per VM, sized by the largest in
    /// use).
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 2000000), extend("default" = 100000)))]
    replay_entries: Option<u32>,
    /// Live proofs one key may hold in the store, 1 to `replay_entries / 2`; by default
    /// `replay_entries / 8`.
    #[cfg_attr(feature = "cli", schemars(range(min = 1, max = 1000000)))]
    max_proofs_per_key: Option<u32>,
    /// Require a server nonce (RFC 9449 §8) in every proof.
    #[cfg_attr(feature = "cli", schemars(extend("default" = false)))]
    #[serde(default)]
    nonce: bool,
    /// `scheme://host[:port]` the proofs' `htu` names; by default the connection's scheme and
    /// `:authority`.
    #[cfg_attr(feature = "cli", schemars(length(min = 1, max = 2048)))]
    origin: Option<String>,
    /// Keep the `DPoP` header on the forwarded request.
    #[cfg_attr(feature = "cli", schemars(extend("default" = false)))]
    #[serde(default)]
    forward_proof: bool,
    /// With `fleet`, when Redis cannot say whether a proof was used at another gateway:
    /// `refuse` (503) or `process` (this Envoy's replay store alone decides; counted).
    #[cfg_attr(feature = "cli", schemars(extend("enum" = ["refuse", "process"], "default" = "refuse")))]
    fleet_unavailable: Option<String>,
}

/// Certificate-bound tokens (RFC 8705).
#[derive(Deserialize, Default)]
#[cfg_attr(feature = "cli", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(super) struct RawMtls {
    /// Read the certificate's hash from the first `x-forwarded-client-cert` element instead of the
    /// connection.
    #[cfg_attr(feature = "cli", schemars(extend("default" = false)))]
    #[serde(default)]
    forwarded_client_cert: bool,
}

/// `dpop`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopConfig {
    pub algorithms: Vec<Alg>,
    pub max_age_s: u64,
    pub clock_skew_s: u64,
    pub replay_entries: u32,
    /// Live proofs one key may hold in the replay store, at most (its share).
    pub max_proofs_per_key: u32,
    pub nonce: bool,
    /// `scheme://host[:port]`, normalised, without a trailing `/`.
    pub origin: Option<String>,
    pub forward_proof: bool,
    /// The `algs` of a `DPoP` challenge: the algorithm names, space-separated.
    pub algs: String,
    /// With `fleet`: a proof Redis cannot check is accepted on this Envoy's word alone.
    pub fleet_unavailable_process: bool,
}

/// `mtls`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsConfig {
    /// Read the client certificate's hash from the first `x-forwarded-client-cert` element
    /// (set by a proxy in front; Envoy must sanitise the header from clients).
    pub forwarded_client_cert: bool,
}

/// What a route asks of unbound tokens (`proof`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofRule {
    /// Unbound tokens are accepted as bearer tokens (the default).
    Optional,
    /// Only bound tokens, with their proof: unbound ones are refused with a DPoP challenge.
    Required,
}

impl ProofRule {
    pub(super) fn parse(field: &str, value: Option<&str>) -> Result<Self, ConfigError> {
        match value.unwrap_or("optional") {
            "optional" => Ok(ProofRule::Optional),
            "required" => Ok(ProofRule::Required),
            _ => Err(ConfigError::new(
                field,
                "must be \"optional\" or \"required\"",
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ProofRule::Optional => "optional",
            ProofRule::Required => "required",
        }
    }
}

impl RawDpop {
    pub(super) fn validate(self) -> Result<DpopConfig, ConfigError> {
        let names = self.algorithms.unwrap_or_else(|| {
            DPOP_ALGORITHMS
                .iter()
                .map(|a| a.name().to_owned())
                .collect()
        });
        if names.is_empty() {
            return Err(ConfigError::new("dpop.algorithms", "must not be empty"));
        }
        let mut algorithms = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let alg = dpop::proof_alg(name)
                .filter(|a| DPOP_ALGORITHMS.contains(a))
                .ok_or_else(|| {
                    let allowed: Vec<&str> = DPOP_ALGORITHMS.iter().map(|a| a.name()).collect();
                    ConfigError::new(
                        &format!("dpop.algorithms[{i}]"),
                        format!("must be one of {} (never none or HMAC)", allowed.join(", ")),
                    )
                })?;
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        let max_age_s = in_range(
            "dpop.max_age_s",
            self.max_age_s.unwrap_or(DEFAULT_DPOP_MAX_AGE_S),
            1,
            3_600,
        )?;
        let clock_skew_s = in_range(
            "dpop.clock_skew_s",
            self.clock_skew_s.unwrap_or(DEFAULT_DPOP_CLOCK_SKEW_S),
            0,
            300,
        )?;
        let replay_entries = entries(
            "dpop.replay_entries",
            self.replay_entries.unwrap_or(DEFAULT_REPLAY_ENTRIES),
            MAX_REPLAY_ENTRIES,
        )?;
        // One key never holds more than half of the store; by default an eighth, so that the
        // ways of every other proof stay free (8 ways at 1/8 taken: full once in 10^7).
        let half = (replay_entries / 2).max(1);
        let max_proofs_per_key = in_range(
            "dpop.max_proofs_per_key",
            u64::from(
                self.max_proofs_per_key
                    .unwrap_or((replay_entries / 8).max(1)),
            ),
            1,
            u64::from(half),
        )?;
        let max_proofs_per_key = u32::try_from(max_proofs_per_key).unwrap_or(half);
        let origin = match self.origin {
            None => None,
            Some(origin) => {
                let normal = dpop::normalize_htu(&format!("{}/", origin.trim_end_matches('/')))
                    .filter(|o| o.matches('/').count() == 3);
                let Some(normal) = normal else {
                    return Err(ConfigError::new(
                        "dpop.origin",
                        "must be scheme://host[:port] (http or https, no path, query or fragment)",
                    ));
                };
                Some(normal.trim_end_matches('/').to_owned())
            }
        };
        // EdDSA is announced under both its names.
        let algs = algorithms
            .iter()
            .map(|a| match a {
                Alg::EdDsa => "EdDSA Ed25519",
                other => other.name(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let fleet_unavailable_process = match self.fleet_unavailable.as_deref() {
            None | Some("refuse") => false,
            Some("process") => true,
            Some(_) => {
                return Err(ConfigError::new(
                    "dpop.fleet_unavailable",
                    "must be \"refuse\" or \"process\"",
                ))
            }
        };
        Ok(DpopConfig {
            fleet_unavailable_process,
            algorithms,
            max_age_s,
            clock_skew_s,
            replay_entries,
            max_proofs_per_key,
            nonce: self.nonce,
            origin,
            forward_proof: self.forward_proof,
            algs,
        })
    }
}

impl RawMtls {
    pub(super) fn validate(self) -> MtlsConfig {
        MtlsConfig {
            forwarded_client_cert: self.forwarded_client_cert,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::tests::cfg;

    #[test]
    fn the_documented_example_parses_with_its_defaults() {
        let c = cfg(r#", "dpop": {"algorithms": ["ES256", "EdDSA", "RS256", "PS256"],
            "max_age_s": 300, "clock_skew_s": 5, "replay_entries": 100000, "nonce": false,
            "origin": "https://API.example.com:443/", "forward_proof": false},
            "mtls": {"forwarded_client_cert": false}, "proof": "optional",
            "policies": [{"name": "payments", "match": {"path_prefix": "/payments/"}, "proof": "required"}]"#)
        .unwrap();
        let d = c.dpop.unwrap();
        assert_eq!(d.origin.as_deref(), Some("https://api.example.com"));
        assert_eq!(d.algs, "ES256 EdDSA Ed25519 RS256 PS256");
        assert_eq!(c.policies.default.proof, ProofRule::Optional);
        assert_eq!(c.policies.get(0).proof, ProofRule::Required);
        assert!(c.mtls.is_some());
        let bare = cfg(r#", "dpop": {}"#).unwrap().dpop.unwrap();
        assert_eq!(
            (
                bare.max_age_s,
                bare.clock_skew_s,
                bare.replay_entries,
                bare.max_proofs_per_key
            ),
            (300, 5, 100_000, 12_500)
        );
        let tiny = cfg(r#", "dpop": {"replay_entries": 8, "max_proofs_per_key": 4}"#);
        assert_eq!(tiny.unwrap().dpop.unwrap().max_proofs_per_key, 4);
        assert_eq!(bare.algorithms, DPOP_ALGORITHMS);
    }

    #[test]
    fn errors_name_the_field() {
        for (extra, field) in [
            (
                r#", "dpop": {"algorithms": ["HS256"]}"#,
                "dpop.algorithms[0]",
            ),
            (
                r#", "dpop": {"algorithms": ["none"]}"#,
                "dpop.algorithms[0]",
            ),
            (r#", "dpop": {"algorithms": []}"#, "dpop.algorithms"),
            (r#", "dpop": {"max_age_s": 0}"#, "dpop.max_age_s"),
            (r#", "dpop": {"clock_skew_s": 301}"#, "dpop.clock_skew_s"),
            (r#", "dpop": {"replay_entries": 0}"#, "dpop.replay_entries"),
            (
                r#", "dpop": {"replay_entries": 100, "max_proofs_per_key": 51}"#,
                "dpop.max_proofs_per_key",
            ),
            (
                r#", "dpop": {"max_proofs_per_key": 0}"#,
                "dpop.max_proofs_per_key",
            ),
            (r#", "dpop": {"origin": "api.example.com"}"#, "dpop.origin"),
            (
                r#", "dpop": {"origin": "https://api.example.com/base"}"#,
                "dpop.origin",
            ),
            (
                r#", "dpop": {"origin": "https://api.example.com?x"}"#,
                "dpop.origin",
            ),
            (r#", "dpop": {"nonces": true}"#, "dpop.nonces"),
            (r#", "mtls": {"xfcc": true}"#, "mtls.xfcc"),
            (r#", "proof": "always""#, "proof"),
            (
                r#", "policies": [{"name": "a", "proof": "yes"}]"#,
                "policies[0].proof",
            ),
        ] {
            assert_eq!(cfg(extra).map(|_| ()).unwrap_err().field, field, "{extra}");
        }
    }
}
