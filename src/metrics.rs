//! The filter's counters. Envoy shows them on the admin `/stats` and `/stats/prometheus`
//! endpoints, prefixed by Envoy with `wasmcustom.`.

/// One counter per outcome the operator needs to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    Allowed,
    DeniedNoCredentials,
    DeniedMalformed,
    DeniedInvalidToken,
    DeniedInsufficientScope,
    TokenServiceError,
    TokenServiceUnavailable,
    CacheHit,
    CacheMiss,
    IntrospectionCalls,
    Coalesced,
    CorsPreflight,
    SplitHit,
    SplitMiss,
    SplitExpired,
    SplitRevoked,
    PublishAccepted,
    PublishRefused,
    Revocations,
    ResponsesSplit,
    SplitRefused,
    Verified,
    VerifyBadSignature,
    VerifyUnknownKey,
    VerifyDisallowedAlgorithm,
    VerifyWrongIssuer,
    VerifyWrongAudience,
    VerifyExpired,
    VerifyNotYetValid,
    VerifyMalformed,
    DeniedJwksUnavailable,
    JwksFetched,
    JwksFetchFailed,
    Minted,
    IntrospectionUnverified,
    GatewayJwksServed,
    RemoteHit,
    RemoteMiss,
    RemoteError,
    RemoteLatencyMs,
    RemoteWriteFailed,
}

impl Counter {
    pub const ALL: [Counter; 41] = [
        Counter::Allowed,
        Counter::DeniedNoCredentials,
        Counter::DeniedMalformed,
        Counter::DeniedInvalidToken,
        Counter::DeniedInsufficientScope,
        Counter::TokenServiceError,
        Counter::TokenServiceUnavailable,
        Counter::CacheHit,
        Counter::CacheMiss,
        Counter::IntrospectionCalls,
        Counter::Coalesced,
        Counter::CorsPreflight,
        Counter::SplitHit,
        Counter::SplitMiss,
        Counter::SplitExpired,
        Counter::SplitRevoked,
        Counter::PublishAccepted,
        Counter::PublishRefused,
        Counter::Revocations,
        Counter::ResponsesSplit,
        Counter::SplitRefused,
        Counter::Verified,
        Counter::VerifyBadSignature,
        Counter::VerifyUnknownKey,
        Counter::VerifyDisallowedAlgorithm,
        Counter::VerifyWrongIssuer,
        Counter::VerifyWrongAudience,
        Counter::VerifyExpired,
        Counter::VerifyNotYetValid,
        Counter::VerifyMalformed,
        Counter::DeniedJwksUnavailable,
        Counter::JwksFetched,
        Counter::JwksFetchFailed,
        Counter::Minted,
        Counter::IntrospectionUnverified,
        Counter::GatewayJwksServed,
        Counter::RemoteHit,
        Counter::RemoteMiss,
        Counter::RemoteError,
        Counter::RemoteLatencyMs,
        Counter::RemoteWriteFailed,
    ];

    /// The stat name (Envoy adds the `wasmcustom.` prefix).
    pub fn name(self) -> &'static str {
        match self {
            Counter::Allowed => "token_filter.allowed",
            Counter::DeniedNoCredentials => "token_filter.denied_no_credentials",
            Counter::DeniedMalformed => "token_filter.denied_malformed",
            Counter::DeniedInvalidToken => "token_filter.denied_invalid_token",
            Counter::DeniedInsufficientScope => "token_filter.denied_insufficient_scope",
            Counter::TokenServiceError => "token_filter.token_service_error",
            Counter::TokenServiceUnavailable => "token_filter.token_service_unavailable",
            Counter::CacheHit => "token_filter.cache_hit",
            Counter::CacheMiss => "token_filter.cache_miss",
            Counter::IntrospectionCalls => "token_filter.introspection_calls",
            Counter::Coalesced => "token_filter.coalesced",
            Counter::CorsPreflight => "token_filter.cors_preflight",
            Counter::SplitHit => "token_filter.split_hit",
            Counter::SplitMiss => "token_filter.split_miss",
            Counter::SplitExpired => "token_filter.split_expired",
            Counter::SplitRevoked => "token_filter.split_revoked",
            Counter::PublishAccepted => "token_filter.publish_accepted",
            Counter::PublishRefused => "token_filter.publish_refused",
            Counter::Revocations => "token_filter.revocations",
            Counter::ResponsesSplit => "token_filter.responses_split",
            Counter::SplitRefused => "token_filter.split_refused",
            Counter::Verified => "token_filter.verified",
            Counter::VerifyBadSignature => "token_filter.verify_failed_bad_signature",
            Counter::VerifyUnknownKey => "token_filter.verify_failed_unknown_key",
            Counter::VerifyDisallowedAlgorithm => "token_filter.verify_failed_disallowed_algorithm",
            Counter::VerifyWrongIssuer => "token_filter.verify_failed_wrong_issuer",
            Counter::VerifyWrongAudience => "token_filter.verify_failed_wrong_audience",
            Counter::VerifyExpired => "token_filter.verify_failed_expired",
            Counter::VerifyNotYetValid => "token_filter.verify_failed_not_yet_valid",
            Counter::VerifyMalformed => "token_filter.verify_failed_malformed",
            Counter::DeniedJwksUnavailable => "token_filter.denied_jwks_unavailable",
            Counter::JwksFetched => "token_filter.jwks_fetched",
            Counter::JwksFetchFailed => "token_filter.jwks_fetch_failed",
            Counter::Minted => "token_filter.minted",
            Counter::IntrospectionUnverified => "token_filter.introspection_unverified",
            Counter::GatewayJwksServed => "token_filter.gateway_jwks_served",
            Counter::RemoteHit => "token_filter.remote_hit",
            Counter::RemoteMiss => "token_filter.remote_miss",
            Counter::RemoteError => "token_filter.remote_error",
            Counter::RemoteLatencyMs => "token_filter.remote_latency_ms",
            Counter::RemoteWriteFailed => "token_filter.remote_write_failed",
        }
    }

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
