//! The filter's counters: one list, from which the enum, [`Counter::ALL`] and the stat names
//! are made (Envoy's `stats.h` X-macro, as `jwt_authn` does). Envoy shows them on the admin
//! `/stats` and `/stats/prometheus` endpoints as `wasmcustom.token_filter.<name>`.
//!
//! When each is bumped: the terminal outcomes (replies, forwards) in [`crate::reply`]'s
//! table; the events of a stage (a cache hit, a call made) in that stage's file, once.

macro_rules! counters {
    ($($variant:ident => $name:literal,)*) => {
        /// One counter per outcome the operator needs to tell apart.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Counter {
            $($variant,)*
        }

        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];

            /// The stat name (Envoy adds the `wasmcustom.` prefix).
            pub fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => concat!("token_filter.", $name),)*
                }
            }
        }
    };
}

counters! {
    Allowed => "allowed",
    AllowedAnonymous => "allowed_anonymous",
    DeniedNoCredentials => "denied_no_credentials",
    DeniedMalformed => "denied_malformed",
    DeniedInvalidToken => "denied_invalid_token",
    DeniedInsufficientScope => "denied_insufficient_scope",
    TokenServiceError => "token_service_error",
    TokenServiceUnavailable => "token_service_unavailable",
    CacheHit => "cache_hit",
    CacheMiss => "cache_miss",
    IntrospectionCalls => "introspection_calls",
    Coalesced => "coalesced",
    CorsPreflight => "cors_preflight",
    SplitHit => "split_hit",
    SplitMiss => "split_miss",
    SplitExpired => "split_expired",
    SplitRevoked => "split_revoked",
    PublishAccepted => "publish_accepted",
    PublishRefused => "publish_refused",
    Revocations => "revocations",
    ResponsesSplit => "responses_split",
    SplitRefused => "split_refused",
    Verified => "verified",
    VerifyBadSignature => "verify_failed_bad_signature",
    VerifyUnknownKey => "verify_failed_unknown_key",
    VerifyDisallowedAlgorithm => "verify_failed_disallowed_algorithm",
    VerifyWrongIssuer => "verify_failed_wrong_issuer",
    VerifyWrongAudience => "verify_failed_wrong_audience",
    VerifyExpired => "verify_failed_expired",
    VerifyNotYetValid => "verify_failed_not_yet_valid",
    VerifyMalformed => "verify_failed_malformed",
    DeniedJwksUnavailable => "denied_jwks_unavailable",
    DeniedStoreUnavailable => "denied_store_unavailable",
    InternalError => "internal_error",
    JwtCacheHit => "jwt_cache_hit",
    ClaimNotCopied => "claim_not_copied",
    DpopProofAccepted => "dpop_proof_accepted",
    DpopProofRefused => "dpop_proof_refused",
    DpopReplayed => "dpop_replayed",
    DeniedReplayStoreFull => "denied_dpop_replay_store_full",
    DeniedFleetUnavailable => "denied_fleet_unavailable",
    FleetDpopProcessOnly => "fleet_dpop_process_only",
    FleetDpopReplayed => "fleet_dpop_replayed",
    DeniedDpopKeyQuota => "denied_dpop_key_quota",
    DeniedUnproven => "denied_proof_of_possession",
    ExchangeCalls => "exchange_calls",
    ExchangeHit => "exchange_hit",
    ExchangeMiss => "exchange_miss",
    ExchangeRefused => "exchange_refused",
    ExchangeError => "exchange_error",
    JwksFetched => "jwks_fetched",
    JwksFetchFailed => "jwks_fetch_failed",
    Minted => "minted",
    IntrospectionUnverified => "introspection_unverified",
    GatewayJwksServed => "gateway_jwks_served",
    RemoteHit => "remote_hit",
    RemoteMiss => "remote_miss",
    RemoteError => "remote_error",
    RemoteLatencyMs => "remote_latency_ms",
    RemoteWriteFailed => "remote_write_failed",
    FleetReads => "fleet_reads",
    FleetHit => "fleet_hit",
    FleetMiss => "fleet_miss",
    FleetError => "fleet_error",
    FleetSealFailed => "fleet_seal_failed",
    FleetWrites => "fleet_writes",
    FleetWriteFailed => "fleet_write_failed",
    FleetRevocationsPublished => "fleet_revocations_published",
    FleetRevocationsApplied => "fleet_revocations_applied",
    FleetRevocationGap => "fleet_revocation_gap",
    FleetRevocationLost => "fleet_revocation_lost",
    RevokedToken => "revoked_token",
    RevokedSubject => "revoked_subject",
    RevokedSession => "revoked_session",
    DeniedRevoked => "denied_revoked",
    BackchannelLogoutAccepted => "backchannel_logout_accepted",
    BackchannelLogoutRefused => "backchannel_logout_refused",
    RevocationMarksFull => "revocation_marks_full",
    RevocationObservedEvicted => "revocation_observed_evicted",
    RevocationRefused => "revocation_refused",
    RevocationUnconfirmed => "revocation_unconfirmed",
    DeniedExpiresTooSoon => "denied_expires_too_soon",
    DeniedLifetimeTooLong => "denied_lifetime_too_long",
    EmbeddedForwarded => "embedded_forwarded",
    EmbeddedRefused => "embedded_refused",
    CookieRequests => "cookie_requests",
    DeniedOrigin => "denied_origin",
    DeniedCsrf => "denied_csrf",
    CookieDecryptFailed => "cookie_decrypt_failed",
    CorsPreflightAnswered => "cors_preflight_answered",
    CorsPreflightRefused => "cors_preflight_refused",
}

impl Counter {
    /// Index into a dense table of metric ids.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexes_dense() {
        let names: std::collections::HashSet<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Counter::ALL.len());
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
