//! Stage: proof of possession. A token bound to a key (RFC 7800 `cnf`) is honoured only with
//! proof that the caller holds that key: a DPoP proof (RFC 9449) for `cnf.jkt`, the client's
//! TLS certificate (RFC 8705) for `cnf["x5t#S256"]`. Bound tokens are enforced on every route,
//! cache hits included (the binding is kept with the token); without the matching `dpop` or
//! `mtls` block a bound token is refused. `proof: "required"` refuses unbound tokens too.
//!
//! Two steps: [`present`] checks what the request presents, once, before any token lookup (a
//! DPoP proof: every RFC 9449 §4.3 check, replay included, so a bad proof costs no
//! introspection); [`bind`] compares it with the token's binding once the token is known.

use crate::config::{Config, ProofRule};
use crate::hash::constant_time_eq;
use crate::host::Host;
use crate::metrics::Counter;
use crate::reply::Denial;
use crate::storage::dpop::{self, ReplayStore, Seen};
use crate::storage::local::Resolved;
use crate::token::bearer::{Presented, Scheme};
use crate::token::dpop::{self as proofs, Expect, ProofError};

use super::{Caller, Request};

/// How long a server nonce is current (and the one before it), in seconds.
pub const NONCE_WINDOW_S: u64 = 60;

/// Checks what the request presents for `token`, which came with `scheme`: exactly one `DPoP`
/// header with a valid, fresh proof for a `DPoP` token; the client certificate with `mtls`.
pub fn present(
    cfg: &Config,
    host: &dyn Host,
    request: &Request<'_>,
    scheme: Scheme,
    token: &str,
) -> Result<Presented, Denial> {
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
        jkt: None,
        cert,
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
    let htu = proofs::request_htu(
        dpop.origin.as_deref(),
        &headers.text(":scheme").unwrap_or_default(),
        &headers.text(":authority").unwrap_or_default(),
        &headers.text(":path").unwrap_or_default(),
    )
    .unwrap_or_default();
    let now_ms = host.now_ms();
    let now_s = now_ms / 1_000;
    let nonce_key = if dpop.nonce {
        let key = dpop::nonce_key(host, &cfg.cache.jwt_namespace, random_key)
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
    let window_s = dpop.max_age_s + 2 * dpop.clock_skew_s + 1;
    let until_ms = proven.iat.saturating_add(window_s).saturating_mul(1_000);
    let hash = dpop::proof_hash(&proven.jkt, &proven.jti);
    match ReplayStore::new(dpop.replay_entries).check_and_insert(host, &hash, until_ms, now_ms) {
        Seen::Fresh => {}
        Seen::Replayed => {
            host.count(Counter::DpopReplayed);
            return Err(Denial::InvalidDpopProof);
        }
        Seen::Full => return Err(Denial::ReplayStoreFull),
    }
    host.count(Counter::DpopProofAccepted);
    presented.jkt = Some(proven.jkt);
    Ok(presented)
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

/// The `Hash` of the first element of an `x-forwarded-client-cert` header (Envoy's format:
/// `;`-separated `key=value` pairs, elements separated by `,`), base64url.
fn xfcc_hash(xfcc: &str) -> Option<String> {
    let first = xfcc.split(',').next()?;
    first
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("hash"))
        .and_then(|(_, v)| hex_to_b64url(v.trim_matches('"')))
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
    let key = dpop::nonce_key(host, &cfg.cache.jwt_namespace, random_key)?;
    Some(proofs::nonce(&key, host.now_ms() / 1_000 / NONCE_WINDOW_S))
}

fn random_key() -> [u8; 32] {
    use jwt_simple::reexports::rand::RngCore as _;
    let mut key = [0u8; 32];
    jwt_simple::reexports::rand::thread_rng().fill_bytes(&mut key);
    key
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
    }
}
