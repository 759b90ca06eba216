//! What a request the filter lets through goes on with, as data: the edits of its headers
//! (`Authorization` overwritten or removed, the claim headers, the headers the filter owns
//! removed) and its filter state, worked out here once and applied by the executor in one
//! place. Nothing is allocated to describe them: they are enumerated from the token the
//! request goes on with, the policy and the configuration.

use std::rc::Rc;

use crate::config::Config;
use crate::host::Host;
use crate::metrics::Counter;
use crate::reply::Outcome;
use crate::storage::local::Resolved;
use crate::token::claims::Claim;

/// Which way a forwarded request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardKind {
    /// To the API, with the filter's `Authorization` and claim headers.
    Token,
    /// To the API without credentials (`token: "none"`, or `"optional"` and none came):
    /// `Authorization` and the claim headers removed.
    Anonymous,
    /// A CORS preflight, unauthenticated.
    Preflight,
    /// A token endpoint request, asking for an uncompressed answer (a compressed one could not
    /// be split); the client's own `Authorization` and `DPoP` go on.
    TokenRequest,
}

/// A request let through, and what its headers become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub kind: ForwardKind,
    /// The policy it was judged under (its claim headers and counters).
    pub policy: usize,
    /// The token it goes on with, for [`ForwardKind::Token`].
    pub token: Option<Rc<Resolved>>,
    /// Headers the filter owns that the request carries, to remove (`route::owned_present`):
    /// empty on the common path, so nothing is allocated.
    pub strip: Vec<String>,
    /// Headers written anew after those are removed (a browser's `Cookie` without the filter's
    /// cookies): empty on the common path.
    pub set: Vec<(String, String)>,
}

impl Forward {
    /// The edit the request cannot go on without, if any: `Authorization` (overwritten with
    /// the token's, never appended, or removed), or `Accept-Encoding: identity` for a token
    /// request. When the proxy refuses it, the request is answered instead.
    pub fn required(&self) -> Option<(&str, Option<&str>)> {
        match self.kind {
            ForwardKind::Token | ForwardKind::Anonymous => Some((
                "authorization",
                self.token.as_deref().map(|t| t.authorization.as_str()),
            )),
            ForwardKind::TokenRequest => Some(("accept-encoding", Some("identity"))),
            ForwardKind::Preflight => None,
        }
    }

    /// Every other header edit, in order: `(name, Some(value))` sets, `(name, None)` removes:
    /// the headers the filter owns that the request carries, then every claim header (written
    /// from the token's claims under the policy, or removed).
    pub fn edits<'a>(
        &'a self,
        cfg: &'a Config,
        host: &'a dyn Host,
    ) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        let strip = self
            .strip
            .iter()
            .map(|name| (name.as_str(), None))
            .chain(self.set.iter().map(|(n, v)| (n.as_str(), Some(v.as_str()))));
        let claims = matches!(self.kind, ForwardKind::Token | ForwardKind::Anonymous)
            .then(|| {
                let rules = cfg.policies.get(self.policy);
                let values = self
                    .token
                    .as_deref()
                    .map_or(&[][..], |t| t.claims.as_slice());
                cfg.policies.claim_headers.iter().map(move |name| {
                    let value = rules
                        .claims_to_headers
                        .iter()
                        .find(|h| h.header == *name)
                        .and_then(|h| claim_text(host, values, h.claim));
                    (name.as_str(), value)
                })
            })
            .into_iter()
            .flatten();
        strip.chain(claims)
    }

    /// The filter state to set (`wasm.token_filter.<claim>` and `wasm.token_filter.policy`):
    /// for requests that go to the API, when `claims_to_filter_state` is configured.
    pub fn filter_state<'a>(
        &'a self,
        cfg: &'a Config,
        host: &'a dyn Host,
    ) -> Vec<(String, &'a str)> {
        let policies = &cfg.policies;
        if policies.filter_state.is_empty()
            || !matches!(self.kind, ForwardKind::Token | ForwardKind::Anonymous)
        {
            return Vec::new();
        }
        let values = self
            .token
            .as_deref()
            .map_or(&[][..], |t| t.claims.as_slice());
        let mut out: Vec<(String, &str)> = policies
            .filter_state
            .iter()
            .filter_map(|(claim, name)| {
                claim_text(host, values, *claim).map(|v| (format!("token_filter.{name}"), v))
            })
            .collect();
        out.push((
            "token_filter.policy".to_owned(),
            policies.get(self.policy).name.as_str(),
        ));
        out
    }

    /// What the request counts as once it went on (with its policy's `allowed`, for those
    /// judged under a policy).
    pub fn outcome(&self) -> Option<Outcome<'static>> {
        match self.kind {
            ForwardKind::Token => Some(Outcome::Forwarded),
            ForwardKind::Anonymous => Some(Outcome::ForwardedAnonymous),
            ForwardKind::Preflight => Some(Outcome::PreflightPassed),
            ForwardKind::TokenRequest => None,
        }
    }
}

/// The text of claim `index` of a token's claims; a claim the rules refuse to copy is counted,
/// and not copied.
fn claim_text<'c>(host: &dyn Host, claims: &'c [Claim], index: usize) -> Option<&'c str> {
    match claims.get(index) {
        Some(Claim::Value(v)) => Some(v),
        Some(Claim::Refused) => {
            host.count(Counter::ClaimNotCopied);
            None
        }
        _ => None,
    }
}
