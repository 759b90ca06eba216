//! The keys that signed recent DPoP proofs, per VM (a worker), with what was precomputed for
//! each ([`crate::token::es256`], [`crate::token::ed25519`]): a client signs all its proofs
//! with one key, so a key that keeps coming back gets a comb (Lim–Lee: `TEETH` teeth
//! `SPACING` bits apart, `2^TEETH − 1` points), and its later proofs cost about a third.
//!
//! A comb costs about two verifications to make, so a key earns one with [`SIGHTS`] − 1
//! proofs that verified without it, within the last [`SEEN`] keys without a comb: keys used once
//! or twice (a flood of new keys, garbage signatures) never pay for one, and with more than
//! [`SEEN`] keys in turn none earns one. At most [`KEPT`] combs are kept, and a new one only
//! takes the place of a comb unused since the last time one was looked for (a clock): a client
//! whose comb is in use keeps it, whatever another sends, and no comb is made to be dropped at
//! once. What an attacker can still force (two valid proofs of a new key, then a third) is a
//! comb's cost every third request, about 1.3 times a proof's cost without combs, and only
//! while some comb stays unused.

use std::rc::Rc;

/// A comb's teeth and their spacing: bit `i·SPACING + c` of a scalar is tooth `i` of column
/// `c`; the teeth cover 256 bits.
pub const TEETH: usize = 8;
pub const SPACING: usize = 32;
/// Points of a comb: the sums `Σ 2^(i·SPACING)·P` over the bits `i` of `index + 1`.
pub const POINTS: usize = (1 << TEETH) - 1;
/// Combs kept (24 KB each for P-256, 40 KB for Ed25519), keys remembered before their comb,
/// and the proofs a key signs before it gets one.
pub const KEPT: usize = 8;
pub const SEEN: usize = 8;
pub const SIGHTS: u8 = 3;

/// A key as its algorithm encodes it (P-256: x ‖ y; Ed25519: the point, then zeros).
pub type KeyId = [u8; 64];

pub struct Recent<T> {
    /// Each comb, and whether it was used since the clock's hand last passed it.
    kept: Vec<(KeyId, Rc<T>, bool)>,
    hand: usize,
    seen: Vec<(KeyId, u8)>,
    next_seen: usize,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Self {
            kept: Vec::new(),
            hand: 0,
            seen: Vec::new(),
            next_seen: 0,
        }
    }
}

impl<T> Recent<T> {
    /// The comb kept for `id` (marked used).
    pub fn get(&mut self, id: &KeyId) -> Option<Rc<T>> {
        let (_, comb, used) = self.kept.iter_mut().find(|(k, _, _)| k == id)?;
        *used = true;
        Some(comb.clone())
    }

    /// Whether `id` has earned its comb (its proofs verified [`SIGHTS`] − 1 times without).
    pub fn earned(&self, id: &KeyId) -> bool {
        self.seen
            .iter()
            .any(|(k, sights)| k == id && *sights + 1 >= SIGHTS)
    }

    /// Counts a proof of `id` that verified without a comb.
    pub fn sighted(&mut self, id: &KeyId) {
        if let Some((_, sights)) = self.seen.iter_mut().find(|(k, _)| k == id) {
            *sights = sights.saturating_add(1);
        } else if self.seen.len() < SEEN {
            self.seen.push((*id, 1));
        } else if let Some(slot) = self.seen.get_mut(self.next_seen) {
            *slot = (*id, 1);
            self.next_seen = (self.next_seen + 1) % SEEN;
        }
    }

    /// Keeps the comb `make` makes for `id`, when there is room: fewer than [`KEPT`] kept, or
    /// one unused since the hand last passed it (the hand clears the marks it passes, once
    /// round at most). `None`, nothing made, when every comb is in use.
    pub fn keep(&mut self, id: &KeyId, make: impl FnOnce() -> T) -> Option<Rc<T>> {
        let at = if self.kept.len() < KEPT {
            self.kept.len()
        } else {
            let mut victim = None;
            for _ in 0..KEPT {
                let at = self.hand;
                self.hand = (self.hand + 1) % KEPT;
                match self.kept.get_mut(at) {
                    Some((_, _, used)) if *used => *used = false,
                    Some(_) => {
                        victim = Some(at);
                        break;
                    }
                    None => {}
                }
            }
            victim?
        };
        if let Some(i) = self.seen.iter().position(|(k, _)| k == id) {
            self.seen.swap_remove(i);
            self.next_seen = self.next_seen.min(self.seen.len()) % SEEN;
        }
        let comb = Rc::new(make());
        let entry = (*id, comb.clone(), false);
        match self.kept.get_mut(at) {
            Some(slot) => *slot = entry,
            None => self.kept.push(entry),
        }
        Some(comb)
    }
}

/// Bit `j` of the little-endian 256-bit number `k`.
pub fn bit_le(k: &[u8; 32], j: usize) -> usize {
    usize::from(k.get(j / 8).map_or(0, |v| (v >> (j % 8)) & 1))
}

/// Column `column` of the comb of `k` (little-endian): the index + 1 of its point, 0 for none.
pub fn column(k: &[u8; 32], column: usize) -> usize {
    (0..TEETH).fold(0, |acc, tooth| {
        acc | bit_le(k, tooth * SPACING + column) << tooth
    })
}

/// The comb of `p`: its bases `2^(i·SPACING)·p` (by `double`), then their sums (by `add`).
pub fn make<P: Copy>(p: P, double: impl Fn(P) -> P, add: impl Fn(&P, &P) -> P) -> Vec<P> {
    let mut bases = [p; TEETH];
    for i in 1..TEETH {
        let prev = bases.get(i - 1).copied().unwrap_or(p);
        if let Some(slot) = bases.get_mut(i) {
            *slot = (0..SPACING).fold(prev, |b, _| double(b));
        }
    }
    sums(&bases, add)
}

/// `a·G + b·Q` from the combs of G and Q (`a`, `b` little-endian), accumulated from
/// `identity` with the curve's `double` and additions of a point of each comb.
#[allow(clippy::too_many_arguments)] // one curve's arithmetic, passed in
pub fn double_mul<A, G, Q>(
    a: &[u8; 32],
    g: &[G],
    b: &[u8; 32],
    q: &[Q],
    identity: A,
    double: impl Fn(A) -> A,
    add_g: impl Fn(A, &G) -> A,
    add_q: impl Fn(A, &Q) -> A,
) -> A {
    let mut acc = identity;
    for c in (0..SPACING).rev() {
        acc = double(acc);
        if let Some(p) = column(a, c).checked_sub(1).and_then(|i| g.get(i)) {
            acc = add_g(acc, p);
        }
        if let Some(p) = column(b, c).checked_sub(1).and_then(|i| q.get(i)) {
            acc = add_q(acc, p);
        }
    }
    acc
}

/// The sums of a comb from its bases (`bases[i] = 2^(i·SPACING)·P`), with `add`: sum `n` is
/// its highest tooth's base plus the sum of its lower teeth, made before it.
fn sums<P: Copy>(bases: &[P; TEETH], add: impl Fn(&P, &P) -> P) -> Vec<P> {
    let mut out: Vec<P> = Vec::with_capacity(POINTS);
    for n in 1..=POINTS {
        let top = (usize::BITS - 1 - n.leading_zeros()) as usize;
        let Some(base) = bases.get(top) else { break };
        let rest = n & !(1 << top);
        let sum = match rest.checked_sub(1).and_then(|i| out.get(i)) {
            Some(lower) => add(lower, base),
            None => *base,
        };
        out.push(sum);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> KeyId {
        [n; 64]
    }

    #[test]
    fn a_key_earns_its_comb_with_two_proofs_among_the_last_seen() {
        let mut r: Recent<u32> = Recent::default();
        assert!(!r.earned(&id(1)));
        r.sighted(&id(1));
        assert!(!r.earned(&id(1)));
        r.sighted(&id(1));
        assert!(r.earned(&id(1)), "its third proof makes it");
        assert_eq!(r.keep(&id(1), || 7).as_deref(), Some(&7));
        assert!(!r.earned(&id(1)), "forgotten as seen once kept");
        assert_eq!(r.get(&id(1)).as_deref(), Some(&7));
        // More than SEEN keys in turn: none earns one.
        for _ in 0..5 {
            for k in 10..10 + SEEN as u8 + 1 {
                assert!(!r.earned(&id(k)), "{k}");
                r.sighted(&id(k));
            }
        }
    }

    #[test]
    fn a_comb_in_use_is_never_replaced() {
        let mut r: Recent<u32> = Recent::default();
        for k in 0..KEPT as u8 {
            assert!(r.keep(&id(100 + k), || u32::from(k)).is_some());
        }
        // All in use: nothing is made, and the hand clears their marks.
        for k in 0..KEPT as u8 {
            assert!(r.get(&id(100 + k)).is_some());
        }
        assert!(r.keep(&id(200), || unreachable!()).is_none());
        // Key 103 used again since: any other goes first, then the next, never 103.
        assert!(r.get(&id(103)).is_some());
        for n in 0..(KEPT as u8 - 1) {
            assert!(r.keep(&id(200 + n), || 9).is_some(), "{n}");
            assert!(r.get(&id(103)).is_some(), "{n}");
        }
        assert!(r.get(&id(103)).is_some());
        for k in 0..KEPT as u8 {
            assert_eq!(r.get(&id(100 + k)).is_some(), k == 3, "{k}");
        }
    }

    #[test]
    fn sums_and_columns_rebuild_the_scalar() {
        // With integers for points: base i is 2^(32 i), so sum n - 1 is the number whose
        // bits at 32 i are those of n.
        let bases: [u128; TEETH] = std::array::from_fn(|i| 1u128 << (16 * i));
        let s = sums(&bases, |a, b| a + b);
        assert_eq!(s.len(), POINTS);
        assert_eq!(s[0b1011 - 1], 1 + (1 << 16) + (1 << 48));
        let mut k = [0u8; 32];
        k[0] = 0b1000_0001; // bits 0 and 7
        k[4] = 1; // bit 32: tooth 1 of column 0
        k[31] = 0x80; // bit 255: tooth 7 of column 31
        assert_eq!(column(&k, 0), 0b11);
        assert_eq!(column(&k, 7), 1);
        assert_eq!(column(&k, 31), 1 << 7);
        assert_eq!(column(&k, 5), 0);
    }
}
