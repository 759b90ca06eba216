//! Stage: proof of possession. A token bound to a key (RFC 7800 `cnf`) is honoured only with
//! proof that the caller holds that key: a DPoP proof (RFC 9449) for `cnf.jkt`, the client's
//! TLS certificate (RFC 8705) for `cnf["x5t#S256"]`. Bound tokens are enforced on every route,
//! cache hits included (the binding is kept with the token); without the matching `dpop` or
//! `mtls` block a bound token is refused. `proof: "required"` refuses unbound tokens too.
//!
//! Three steps: [`present`] checks what the request presents, once, before any token lookup (a
//! DPoP proof: every RFC 9449 §4.3 check but replay, so a bad proof costs no introspection);
//! [`bind`] compares it with the token's binding once the token is known; [`record`] records
//! the proof (replay, and its key's share of the store) only once the token is resolved,
//! active and bound to the proof's key, so proofs sent with worthless tokens take no room.

use crate::config::{Config, ProofRule};
use crate::hash::constant_time_eq;
use crate::host::Host;
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::storage::dpop::{self, Admit, KeyQuota, ReplayStore, Seen};
use crate::storage::fleet::{self, Claimed};
use crate::storage::local::Resolved;
use crate::storage::remote::Call;
use crate::token::bearer::{Presented, ProofUse, Scheme};
use crate::token::dpop::{self as proofs, Expect, ProofError};

use super::{Caller, Ctx, Request};

/// How long a server nonce is current (and the one before it), in seconds.
pub const NONCE_WINDOW_S: u64 = 60;

/// Checks what the request presents for `token`, which came with `scheme`: exactly one `DPoP`
/// header with a valid, fresh proof for a `DPoP` token; the client certificate with `mtls`.
pub fn present(
    cx: &Ctx<'_>,
    request: &Request<'_>,
    scheme: Scheme,
    token: &str,
) -> Result<Presented, Denial> {
    let (cfg, host) = (cx.cfg, cx.host);
    let headers = request.headers;
    let proofs_sent = headers.count("dpop");
    if proofs_sent > 1 {
        // RFC 9449 §4.3 step 1: one proof, never a choice.
        return Err(Denial::MalformedCredentials);
    }
    let cert = cfg.mtls.as_ref().and_then(|m| {
        if m.forwarded_client_cert {
            headers
                .text("x-forwarded-client-cert")
                .and_then(|x| xfcc_hash(&x))
        } else {
            request.client_cert_sha256.and_then(hex_to_b64url)
        }
    });
    let mut presented = Presented {
        scheme: Some(scheme),
        cert,
        ..Presented::default()
    };
    if scheme != Scheme::Dpop {
        // A Bearer request's DPoP header proves nothing (RFC 9449 §7.2): a DPoP-bound token
        // sent as Bearer is refused by `bind`.
        return Ok(presented);
    }
    let Some(dpop) = &cfg.dpop else {
        return Err(Denial::InvalidToken);
    };
    let Some(proof) = headers.text("dpop") else {
        host.count(Counter::DpopProofRefused);
        return Err(Denial::InvalidDpopProof);
    };
    let method = headers.text(":method").unwrap_or_default();
    // The scheme is the connection's (TLS or not), never what the client says it is: an
    // `https` `:scheme` sent over plain text would make a proof for `https://...` pass.
    let scheme = if request.secure { "https" } else { "http" };
    let htu = proofs::request_htu(
        dpop.origin.as_deref(),
        scheme,
        &headers.text(":authority").unwrap_or_default(),
        &headers.text(":path").unwrap_or_default(),
    )
    .unwrap_or_default();
    let now_ms = host.now_ms();
    let now_s = now_ms / 1_000;
    let nonce_key = if dpop.nonce {
        let key = dpop::nonce_key(host, &cfg.cache.jwt_namespace, crate::hash::random_key)
            .ok_or(Denial::UseDpopNonce)?;
        Some(key)
    } else {
        None
    };
    let nonce_ok =
        |n: &str| nonce_key.is_some_and(|k| proofs::nonce_is_current(&k, now_s, NONCE_WINDOW_S, n));
    let expect = Expect {
        algorithms: &dpop.algorithms,
        method: &method,
        htu: &htu,
        token,
        now_s,
        max_age_s: dpop.max_age_s,
        clock_skew_s: dpop.clock_skew_s,
        nonce: nonce_key
            .is_some()
            .then_some(&nonce_ok as &dyn Fn(&str) -> bool),
    };
    let proven = match proofs::verify(&proof, &expect) {
        Ok(proven) => proven,
        Err(ProofError::Nonce) => {
            host.count(Counter::DpopProofRefused);
            return Err(Denial::UseDpopNonce);
        }
        Err(_) => {
            host.count(Counter::DpopProofRefused);
            return Err(Denial::InvalidDpopProof);
        }
    };
    // Live while a proof of that `iat` could still be accepted, and a second more.
    let until_ms = proven
        .iat
        .saturating_add(window_s(dpop))
        .saturating_mul(1_000);
    presented.proof = Some(ProofUse {
        id: dpop::proof_hash(&proven.jkt, &proven.jti),
        key: crate::hash::token_hash(&proven.jkt),
        until_ms,
    });
    presented.jkt = Some(proven.jkt);
    Ok(presented)
}

/// How long a proof can be accepted after its `iat`, and a second more.
fn window_s(dpop: &crate::config::DpopConfig) -> u64 {
    dpop.max_age_s + 2 * dpop.clock_skew_s + 1
}

/// Records the proof the caller presented, once its token is resolved, active and bound to the
/// proof's key (the verdict forwards): first its key's share of the replay store, then the
/// replay store itself. A request without a proof passes.
pub fn record(cx: &Ctx<'_>, caller: &Caller<'_>) -> Result<(), Denial> {
    let (cfg, host) = (cx.cfg, cx.host);
    let (Some(proof), Some(dpop)) = (&caller.presented.proof, &cfg.dpop) else {
        return Ok(());
    };
    let now_ms = host.now_ms();
    // Without its salt (shared data refusing a write) no share can be counted: fail closed.
    let Some(salt) = dpop::quota_salt(host, crate::hash::random_key) else {
        return Err(Denial::ReplayStoreFull);
    };
    // The key's share is counted only for a proof that is not a replay and has room: a
    // replayed proof (someone else's capture) or a full store costs the key nothing.
    let admit = |store_size: u32| {
        let quota = KeyQuota {
            slots: KeyQuota::table_slots(store_size),
            limit: dpop.max_proofs_per_key,
            bucket_s: window_s(dpop),
        };
        match quota.admit(host, &proof.key, &salt, now_ms) {
            Admit::Yes => Ok(()),
            Admit::Over { retry_after_s } => Err(retry_after_s),
        }
    };
    match ReplayStore::new(dpop.replay_entries).check_and_insert(
        host,
        &proof.id,
        proof.until_ms,
        now_ms,
        admit,
    ) {
        Seen::Fresh => {
            host.count(Counter::DpopProofAccepted);
            Ok(())
        }
        Seen::Replayed => {
            host.count(Counter::DpopReplayed);
            Err(Denial::InvalidDpopProof)
        }
        Seen::Full => Err(Denial::ReplayStoreFull),
        Seen::OverQuota { retry_after_s } => Err(Denial::DpopKeyQuota {
            retry_after_s: u32::try_from(retry_after_s).unwrap_or(u32::MAX),
        }),
    }
}

/// With `fleet`: the claim of the proof `presented` (recorded here already), so that it is
/// accepted once in the whole fleet; `None` without a proof or a fleet.
pub fn fleet_claim(cx: &Ctx<'_>, presented: &Presented) -> Option<Call> {
    if !claims_in_fleet(cx, presented) {
        return None;
    }
    let (fleet, proof) = (cx.cfg.fleet.as_ref()?, presented.proof.as_ref()?);
    let ttl_ms = proof.until_ms.saturating_sub(cx.host.now_ms());
    Some(fleet::claim(&fleet.key_prefix, &proof.id, ttl_ms))
}

/// Whether a forward of a request that presented `presented` waits for its proof's claim in
/// the fleet (asked on every forward: no call made up to answer it).
pub fn claims_in_fleet(cx: &Ctx<'_>, presented: &Presented) -> bool {
    cx.cfg.fleet.is_some() && presented.proof.is_some()
}

/// What the fleet answered a claim: a proof taken before (at any gateway) is a replay; one
/// Redis cannot check is refused (503), or with `dpop.fleet_unavailable: "process"` accepted on
/// this Envoy's replay store alone (counted).
pub fn fleet_claimed(cx: &Ctx<'_>, claimed: Claimed) -> Result<(), Denial> {
    let host = cx.host;
    match claimed {
        Claimed::Fresh => Ok(()),
        Claimed::Taken => {
            host.count(Counter::FleetDpopReplayed);
            Err(Denial::InvalidDpopProof)
        }
        Claimed::Failed => {
            host.count(Counter::FleetError);
            if cx
                .cfg
                .dpop
                .as_ref()
                .is_some_and(|d| d.fleet_unavailable_process)
            {
                host.count(Counter::FleetDpopProcessOnly);
                Ok(())
            } else {
                Err(Denial::FleetUnavailable)
            }
        }
    }
}

/// Whether `caller` may use `token`: a bound token with its proof, and an unbound one where the
/// policy accepts one.
pub fn bind(cfg: &Config, caller: &Caller<'_>, token: &Resolved) -> Result<(), Denial> {
    let (binding, presented) = (&token.binding, caller.presented);
    if let Some(jkt) = &binding.jkt {
        let proven = cfg.dpop.is_some()
            && presented.scheme == Some(Scheme::Dpop)
            && presented
                .jkt
                .as_deref()
                .is_some_and(|p| !jkt.is_empty() && constant_time_eq(p.as_bytes(), jkt.as_bytes()));
        if !proven {
            return Err(Denial::BoundTokenUnproven);
        }
    }
    if let Some(x5t) = &binding.x5t {
        let proven = cfg.mtls.is_some()
            && presented
                .cert
                .as_deref()
                .is_some_and(|c| !x5t.is_empty() && constant_time_eq(c.as_bytes(), x5t.as_bytes()));
        if !proven {
            return Err(Denial::BoundTokenUnproven);
        }
    }
    if binding.jkt.is_none() {
        // A proof with a token not bound to its key proves nothing: refused (RFC 9449 §7.1).
        if presented.scheme == Some(Scheme::Dpop) {
            return Err(Denial::BoundTokenUnproven);
        }
        if binding.x5t.is_none() && caller.policy.proof == ProofRule::Required {
            return Err(Denial::ProofRequired);
        }
    }
    Ok(())
}

/// The `Hash` of the first element of an `x-forwarded-client-cert` header, base64url. Envoy's
/// format: elements separated by `,`, each `;`-separated `key=value` pairs, a value that holds
/// `,`, `;` or `=` double-quoted (with `\"` inside): what is inside quotes is a value, never a
/// separator, so `Subject="CN=a;Hash=..."` names no hash. A header that does not parse names
/// none either.
fn xfcc_hash(xfcc: &str) -> Option<String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let (mut key, mut value) = (String::new(), String::new());
    let (mut in_value, mut quoted, mut escaped, mut was_quoted) = (false, false, false, false);
    let mut chars = xfcc.chars();
    loop {
        let c = chars.next();
        if quoted {
            match c? {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => quoted = false,
                other => {
                    escaped = false;
                    value.push(other);
                }
            }
            continue;
        }
        match c {
            Some('"') if in_value && value.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            Some('"') => return None,
            Some('=') if !in_value => in_value = true,
            Some(';') | Some(',') | None => {
                if in_value {
                    pairs.push((key.trim().to_ascii_lowercase(), std::mem::take(&mut value)));
                } else if !key.trim().is_empty() {
                    return None;
                }
                key.clear();
                (in_value, was_quoted) = (false, false);
                if c != Some(';') {
                    break;
                }
            }
            Some(other) if in_value => {
                if was_quoted && !other.is_whitespace() {
                    return None;
                }
                if !was_quoted {
                    value.push(other);
                }
            }
            Some(other) => key.push(other),
        }
    }
    let hashes: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "hash")
        .map(|(_, v)| v.trim())
        .collect();
    // One hash, or none: two are ambiguous.
    match hashes.as_slice() {
        [one] => hex_to_b64url(one),
        _ => None,
    }
}

/// A SHA-256 in hex (as Envoy gives `connection.sha256_peer_certificate_digest`) as base64url.
fn hex_to_b64url(hex: &str) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// The server nonce current now (RFC 9449 §8), for a `use_dpop_nonce` reply: `None` without
/// `dpop.nonce`, or when the nonce key cannot be kept.
pub fn server_nonce(cfg: &Config, host: &dyn Host) -> Option<String> {
    cfg.dpop.as_ref().filter(|d| d.nonce)?;
    let key = dpop::nonce_key(host, &cfg.cache.jwt_namespace, crate::hash::random_key)?;
    Some(proofs::nonce(&key, host.now_ms() / 1_000 / NONCE_WINDOW_S))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_hashes() {
        let hex = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";
        let b64 = hex_to_b64url(hex).unwrap();
        assert_eq!(b64, "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA");
        assert_eq!(
            hex_to_b64url(&hex.to_uppercase()).as_deref(),
            Some(b64.as_str())
        );
        assert_eq!(hex_to_b64url("abc"), None);
        assert_eq!(hex_to_b64url(&"zz".repeat(32)), None);
        let xfcc = format!(r#"By=spiffe://a;Hash={hex};Subject="CN=client",Hash=ffff"#);
        assert_eq!(xfcc_hash(&xfcc).as_deref(), Some(b64.as_str()));
        assert_eq!(xfcc_hash("By=x;Subject=y"), None);
        // Quoted values are values: a hash inside one is no hash.
        let other = "ff".repeat(32);
        for (xfcc, want) in [
            (format!(r#"Subject="CN=a;Hash={other}""#), None),
            (
                format!(r#"Subject="CN=a;Hash={other}";Hash={hex}"#),
                Some(&b64),
            ),
            (
                format!(r#"Subject="CN=\"a\";Hash={other},x";Hash={hex}"#),
                Some(&b64),
            ),
            (format!(r#"Hash="{hex}";By=x"#), Some(&b64)),
            (format!(r#"Hash={hex};Hash={other}"#), None),
            (format!(r#"Subject="unterminated;Hash={hex}"#), None),
            (format!(r#"Subject="a"b;Hash={hex}"#), None),
            (format!(r#"By=x,Hash={hex}"#), None),
        ] {
            assert_eq!(xfcc_hash(&xfcc).as_ref(), want, "{xfcc}");
        }
    }
}
