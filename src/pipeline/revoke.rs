//! Beside the request path: revocation (`revocation`). The revocation API, RFC 7009 requests
//! seen on their way to the token service, and OpenID Connect back-channel logout all end in
//! [`revoke`]: marks written (`storage::revocation`), the log appended, this worker's copies
//! forgotten; the answer waits until every live worker has applied the log ([`confirmed`]).
//! On the request path, one question ([`refuses`]), asked where a token is resolved from
//! anything but this worker's own copies: a shared cache entry, the split store, an
//! introspection's or an exchange's answer, a JWT verified. A worker's own copies are kept
//! right by [`follow`], on its timer: a hit on them costs nothing more.

use crate::config::Config;
use crate::config::DEFAULT_CLOCK_SKEW_S;
use crate::hash::{self, constant_time_eq, TokenHash};
use crate::metrics::Counter;
use crate::reply::RevocationReply;
use crate::storage::local::Resolved;
use crate::storage::revocation::{self as store, Entry, Insert, Mark, MarkKind, Marks};
use crate::token::bearer;
use crate::token::revocation::{self, Revoke};
use crate::token::split::HashEncoding;

use super::{Ctx, Worker};

/// How long a revocation waits for every worker to apply it before it is answered 503.
pub const CONFIRM_DEADLINE_MS: u64 = 5_000;

/// Whether `token`, resolved from anything but this worker's own copies, is revoked. Asked
/// only once a revocation happened in this VM (`fresh`: read that from shared data now, for
/// an answer that arrived while this worker's timer had not run yet).
pub fn refuses(cx: &Ctx<'_>, token: &Resolved, fresh: bool) -> bool {
    let Some(identity) = &token.identity else {
        return false;
    };
    let follower = &cx.worker.revocation;
    let host = cx.host;
    let now = host.now_ms();
    let looked = fresh && (follower.seen.get() || store::log_seq(host) > 0);
    if !looked && !follower.seen.get() {
        return false;
    }
    // Marks cannot be found without their salt: refused (fail closed).
    let Some(salt) = salt(cx) else {
        return true;
    };
    if fresh {
        let sizes: Vec<u32> = Marks::layout(host).live(now).collect();
        return Marks::covering(host, &salt, &sizes, identity, now);
    }
    Marks::covering(host, &salt, &follower.sizes.borrow(), identity, now)
}

/// The marks' placement salt (read once per worker).
fn salt(cx: &Ctx<'_>) -> Option<[u8; 32]> {
    let cell = &cx.worker.revocation.salt;
    if cell.get().is_none() {
        cell.set(store::salt(cx.host));
    }
    cell.get()
}

/// What a configuration with `revocation` does when it loads: the marks' slots, the
/// participants' slots, its own place (its copies are empty: it starts where the log is).
pub fn start(cx: &Ctx<'_>) -> u32 {
    let Some(rv) = &cx.cfg.revocation else {
        return 0;
    };
    let host = cx.host;
    let created = Marks::new(rv.max_marks).initialize(host, rv.mark_ttl_s.saturating_mul(1_000));
    store::create_participants(host);
    salt(cx);
    let follower = &cx.worker.revocation;
    let seq = store::log_seq(host);
    follower.applied.set(seq);
    follower.seen.set(seq > 0);
    follow(cx);
    created
}

/// This worker's turn (its timer, and right after a revocation it made): the sizes marks live
/// under, the log applied to its copies, its participant record written. A worker that has
/// no participant slot keeps no copies (nobody would wait for it).
pub fn follow(cx: &Ctx<'_>) {
    if cx.cfg.revocation.is_none() {
        return;
    }
    let (worker, host) = (cx.worker, cx.host);
    let follower = &worker.revocation;
    let now = host.now_ms();
    *follower.sizes.borrow_mut() = Marks::layout(host).live(now).collect();
    let seq = store::log_seq(host);
    let mut applied = follower.applied.get();
    if seq.saturating_sub(applied) > store::LOG_SLOTS {
        forget_all(worker);
        applied = seq;
    }
    while applied < seq {
        match store::log_read(host, applied + 1) {
            Entry::Mark { mark, .. } => {
                forget(worker, &mark);
                applied += 1;
            }
            // Taken but not written: looked at again on the next tick; a number left unwritten
            // that long (its writer gone) costs every copy, never a revocation.
            Entry::NotYet if follower.unwritten.get() != Some(applied + 1) => {
                follower.unwritten.set(Some(applied + 1));
                break;
            }
            Entry::NotYet | Entry::Lost => {
                forget_all(worker);
                applied = seq;
            }
        }
    }
    if applied == seq {
        follower.unwritten.set(None);
    }
    follower.applied.set(applied);
    if applied > 0 {
        follower.seen.set(true);
    }
    let id = follower.id;
    let listed = match follower.slot.get() {
        Some(slot) if store::beat(host, slot, id, applied, now) => true,
        _ => {
            let slot = store::join(host, id, applied, now);
            follower.slot.set(slot);
            slot.is_some()
        }
    };
    for copies in [
        &worker.local,
        &worker.local_jwt,
        &worker.split_local,
        &worker.local_embedded,
    ] {
        copies.keep(listed);
    }
    worker.local_exchange.keep(listed);
}

/// Forgets this worker's copies of what `mark` revokes.
fn forget(worker: &Worker, mark: &Mark) {
    let covered = |t: &Resolved| t.identity.as_ref().is_some_and(|i| mark.covers(i));
    for copies in [
        &worker.local,
        &worker.local_jwt,
        &worker.split_local,
        &worker.local_embedded,
    ] {
        copies.forget(covered);
    }
    worker.local_exchange.forget(covered);
}

fn forget_all(worker: &Worker) {
    for copies in [
        &worker.local,
        &worker.local_jwt,
        &worker.split_local,
        &worker.local_embedded,
    ] {
        copies.clear();
    }
    worker.local_exchange.clear();
}

/// Whether every live worker has applied the log up to `seq`.
pub fn confirmed(cx: &Ctx<'_>, seq: u64) -> bool {
    store::all_applied(cx.host, seq, cx.host.now_ms())
}

/// Revokes `what`, with the tokens of a subject or session issued until `issued_until_s`:
/// its mark written (renewed if there), the log appended, this worker's copies forgotten at
/// once. The log's sequence number to wait for, or why not.
pub fn revoke(cx: &Ctx<'_>, what: &Revoke, issued_until_s: u64) -> Result<u64, RevocationReply> {
    let (kind, key, counter) = match what {
        Revoke::Token(hash) => (MarkKind::Token, *hash, Counter::RevokedToken),
        Revoke::Subject(sub) => (
            MarkKind::Subject,
            revocation::subject_key(sub),
            Counter::RevokedSubject,
        ),
        Revoke::Session(sid) => (
            MarkKind::Session,
            revocation::session_key(sid),
            Counter::RevokedSession,
        ),
    };
    apply(cx, kind, key, issued_until_s, counter)
}

/// A revocation another gateway of the fleet made (`fleet_timer.rs`): its mark written
/// here unless one that revokes as much is, the log appended (every worker forgets its
/// copies; never published again). Whether it was applied.
pub fn from_fleet(cx: &Ctx<'_>, mark: &Mark) -> bool {
    let host = cx.host;
    let now = host.now_ms();
    if mark.until_ms <= now || cx.cfg.revocation.is_none() {
        return false;
    }
    let Some(salt) = salt(cx) else {
        return false;
    };
    if Marks::holds_as_much(host, &salt, mark, now) {
        return false;
    }
    let inserted = insert(cx, mark);
    if mark.kind == MarkKind::Logout {
        return inserted.is_ok();
    }
    // With no room for its mark (counted), every worker's copies are forgotten all the same.
    if store::log_append(host, mark, true).is_none() {
        return false;
    }
    follow(cx);
    true
}

/// Writes one mark (living `mark_ttl_s`: at least as long as the gateway serves a token for,
/// validated), appends it to the log and forgets this worker's copies.
fn apply(
    cx: &Ctx<'_>,
    kind: MarkKind,
    key: TokenHash,
    at_s: u64,
    counter: Counter,
) -> Result<u64, RevocationReply> {
    let host = cx.host;
    let mark = mark(cx, kind, key, at_s)?;
    let inserted = insert(cx, &mark);
    // A token the token service revoked, with no room for its mark: 503, but every worker's
    // copies of it are forgotten all the same.
    match &inserted {
        Err(RevocationReply::Full) if kind == MarkKind::Observed => {}
        Err(other) => return Err(*other),
        Ok(()) => {}
    }
    let Some(seq) = store::log_append(host, &mark, false) else {
        return Err(RevocationReply::Unavailable(
            "the revocation log is busy; retry",
        ));
    };
    follow(cx);
    inserted?;
    host.count(counter);
    Ok(seq)
}

fn mark(cx: &Ctx<'_>, kind: MarkKind, key: TokenHash, at_s: u64) -> Result<Mark, RevocationReply> {
    let Some(rv) = &cx.cfg.revocation else {
        return Err(RevocationReply::MethodNotAllowed);
    };
    let now = cx.host.now_ms();
    Ok(Mark {
        kind,
        key,
        at_s,
        until_ms: now.saturating_add(rv.mark_ttl_s.saturating_mul(1_000)),
    })
}

/// Until when the tokens of a subject or session revoked now were issued: now, plus the
/// clock skew allowed to the token service (`verify.clock_skew_s`), whose clock may run ahead.
fn issued_until_now(cx: &Ctx<'_>) -> u64 {
    let skew = cx
        .cfg
        .verify
        .as_ref()
        .map_or(DEFAULT_CLOCK_SKEW_S, |v| v.policy.clock_skew_s);
    (cx.host.now_ms() / 1_000).saturating_add(skew)
}

fn insert(cx: &Ctx<'_>, mark: &Mark) -> Result<(), RevocationReply> {
    let Some(rv) = &cx.cfg.revocation else {
        return Err(RevocationReply::MethodNotAllowed);
    };
    let Some(salt) = salt(cx) else {
        return Err(RevocationReply::Unavailable(
            "the revocation marks cannot be written; retry",
        ));
    };
    match Marks::new(rv.max_marks).insert(cx.host, &salt, mark, cx.host.now_ms()) {
        Insert::Added => Ok(()),
        Insert::Evicted => {
            cx.host.count(Counter::RevocationObservedEvicted);
            Ok(())
        }
        Insert::Replayed => Err(RevocationReply::Invalid("replayed")),
        Insert::Full => {
            cx.host.count(Counter::RevocationMarksFull);
            Err(RevocationReply::Full)
        }
    }
}

/// Checks a revocation API request's method and secret, before its body is read.
pub fn api_gate(
    cfg: &Config,
    method: &str,
    authorization: Option<&str>,
) -> Result<(), RevocationReply> {
    let Some(rv) = &cfg.revocation else {
        return Err(RevocationReply::MethodNotAllowed);
    };
    if method != "POST" {
        return Err(RevocationReply::MethodNotAllowed);
    }
    let presented =
        bearer::parse_authorization(authorization).map_err(|_| RevocationReply::Unauthorized)?;
    if constant_time_eq(&hash::token_hash(presented), &rv.secret_hash) {
        Ok(())
    } else {
        Err(RevocationReply::Unauthorized)
    }
}

/// Applies an authenticated revocation API request's body.
pub fn api(cx: &Ctx<'_>, body: &[u8]) -> Result<u64, RevocationReply> {
    let encoding = cx
        .cfg
        .split
        .as_ref()
        .map_or(HashEncoding::Base64url, |s| s.hash_encoding);
    let what = revocation::parse_api(body, encoding).map_err(|e| {
        RevocationReply::Invalid(match e {
            revocation::FormError::Malformed => "the body is not a form",
            revocation::FormError::NotExactlyOne => {
                "exactly one of token, token_hash, sub, sid is required"
            }
            revocation::FormError::BadValue => "a value is empty, too long or not text",
            revocation::FormError::BadHash => {
                "token_hash is not a SHA-256 in the configured encoding"
            }
        })
    })?;
    fleet_room(cx)?;
    revoke(cx, &what, issued_until_now(cx))
}

/// With a fleet, room for one more revocation before Redis takes the ones made already (a
/// revocation never overwritten before it reaches the fleet): else 503, retry.
fn fleet_room(cx: &Ctx<'_>) -> Result<(), RevocationReply> {
    if super::fleet_timer::backlog(cx) >= super::fleet_timer::BACKLOG_LIMIT {
        cx.host.count(Counter::FleetError);
        return Err(RevocationReply::Unavailable(
            "the fleet has not taken the revocations made here yet; retry",
        ));
    }
    Ok(())
}

/// A back-channel logout request's body (OpenID Connect Back-Channel Logout 1.0, 2.6): the
/// logout token verified with `verify`'s keys, for one of the configured audiences, checked
/// rule by rule, its `jti` accepted once; then its session revoked, or without one its
/// subject.
pub fn logout(cx: &Ctx<'_>, body: &[u8]) -> Result<u64, RevocationReply> {
    let (cfg, host) = (cx.cfg, cx.host);
    // Why a logout token is refused is counted, never said (nor logged with the token).
    let refused = |_why: revocation::LogoutError| {
        host.count(Counter::BackchannelLogoutRefused);
        RevocationReply::Invalid("the logout token is not valid")
    };
    let (Some(rv), Some(verify)) = (&cfg.revocation, &cfg.verify) else {
        return Err(RevocationReply::MethodNotAllowed);
    };
    let Some(bcl) = &rv.backchannel_logout else {
        return Err(RevocationReply::MethodNotAllowed);
    };
    let token = revocation::logout_token(body).map_err(refused)?;
    let Some(keys) = cx.worker.keys.keys() else {
        return Err(RevocationReply::Unavailable(
            "the keys to verify the logout token are not loaded yet",
        ));
    };
    let now = host.now_ms();
    let claims = keys
        .verify_logout(&verify.policy, &bcl.audiences, &token, now / 1_000)
        .map_err(|failure| {
            if failure == crate::token::jws::VerifyFailure::UnknownKey {
                cx.worker.keys.request_refetch();
            }
            refused(revocation::LogoutError::Unverified)
        })?;
    let logout = revocation::logout_claims(&claims).map_err(refused)?;
    // Its `jti`, once: remembered as long as any mark (a replay never revokes again, which
    // would reach tokens issued since). Looked for first, written once the revocation is
    // made: a revocation that fails (503) leaves the `jti` free for the provider's retry.
    let jti = mark(
        cx,
        MarkKind::Logout,
        revocation::logout_key(&verify.policy.issuer, &logout.jti),
        now / 1_000,
    )?;
    let Some(salt) = salt(cx) else {
        return Err(RevocationReply::Unavailable(
            "the revocation marks cannot be read; retry",
        ));
    };
    if Marks::holds(host, &salt, &jti, now) {
        return Err(refused(revocation::LogoutError::Replayed));
    }
    // With a `sid`, that session only (the user's other sessions go on); else every session
    // of the subject (section 2.4). Their tokens issued until the logout token was (the
    // provider's clock, which issued them too).
    let what = match (logout.sid, logout.sub) {
        (Some(sid), _) => Revoke::Session(sid),
        (None, Some(sub)) => Revoke::Subject(sub),
        (None, None) => return Err(refused(revocation::LogoutError::NoSubjectOrSession)),
    };
    fleet_room(cx)?;
    let seq = revoke(cx, &what, logout.iat)?;
    match insert(cx, &jti) {
        // The same logout token accepted at once on another worker: it revoked the same.
        Ok(()) | Err(RevocationReply::Invalid(_)) => {}
        // Revoked, but the `jti` not kept: 503, and the provider's retry revokes again.
        Err(other) => return Err(other),
    }
    host.count(Counter::BackchannelLogoutAccepted);
    Ok(seq)
}

/// An RFC 7009 request the token service answered 200: the token it named is revoked here
/// too.
///
/// RFC 7009 answers 200 for a token the server does not know, so whoever holds client
/// credentials can have any value named here: its mark gives way to any other
/// ([`MarkKind::Observed`]) and such requests can never fill a bucket against the operator.
pub fn observed(cx: &Ctx<'_>, token: &TokenHash) -> Result<u64, RevocationReply> {
    let at_s = cx.host.now_ms() / 1_000;
    apply(cx, MarkKind::Observed, *token, at_s, Counter::RevokedToken)
}
