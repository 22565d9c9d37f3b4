//! Word-at-a-time bitmap primitives over `[u64]`, the model's stand-ins for
//! the kernel's `find_next_bit`, `find_next_zero_bit`, `find_last_bit`,
//! `bitmap_set` and `bitmap_clear`.
//!
//! Every search looks at whole 64-bit words and uses `trailing_zeros` /
//! `leading_zeros`, so a scan over a 4 KiB block (1024 bits) touches at most
//! 16 words.  Ranges are half open, `[start, end)`, and `end` never exceeds
//! the bitmap's capacity (`map.len() * 64`).

pub(crate) const WORD_BITS: usize = u64::BITS as usize;

/// Number of `u64` words needed to hold `bits` bits (`BITS_TO_LONGS`).
pub(crate) const fn words_for(bits: usize) -> usize {
    bits.div_ceil(WORD_BITS)
}

#[inline]
pub(crate) fn test_bit(map: &[u64], bit: usize) -> bool {
    map[bit / WORD_BITS] >> (bit % WORD_BITS) & 1 != 0
}

#[inline]
pub(crate) fn set_bit(map: &mut [u64], bit: usize) {
    map[bit / WORD_BITS] |= 1 << (bit % WORD_BITS);
}

#[inline]
pub(crate) fn clear_bit(map: &mut [u64], bit: usize) {
    map[bit / WORD_BITS] &= !(1 << (bit % WORD_BITS));
}

/// Mask of the bits of one word from bit `lo` (inclusive) to bit `hi`
/// (exclusive), `0 <= lo <= hi <= 64`.
#[inline]
fn word_mask(lo: usize, hi: usize) -> u64 {
    debug_assert!(lo <= hi && hi <= WORD_BITS);
    if lo == hi {
        return 0;
    }
    let upper = if hi == WORD_BITS { !0 } else { (1u64 << hi) - 1 };
    upper & (!0u64 << lo)
}

/// Write `value` to every word of `words`.  A few words are written one by
/// one: a loop here becomes a `memset` call, which costs more than the
/// stores for the short runs the allocation path writes (up to 4 middle
/// words: a 1 KiB area).
#[inline]
fn fill_words(words: &mut [u64], value: u64) {
    match words {
        [] => {}
        [a] => *a = value,
        [a, b] => (*a, *b) = (value, value),
        [a, b, c] => (*a, *b, *c) = (value, value, value),
        [a, b, c, d] => (*a, *b, *c, *d) = (value, value, value, value),
        _ => words.fill(value),
    }
}

/// Set (`SET`) or clear bits `[start, end)` spanning more than one word:
/// a mask for the first and last word and whole-word stores between.  Kept
/// out of line: set_range/clear_range inline only their one-word fast path.
#[inline(never)]
fn write_words<const SET: bool>(map: &mut [u64], start: usize, end: usize) {
    let (first, last) = (start / WORD_BITS, (end - 1) / WORD_BITS);
    debug_assert!(first < last);
    let head = !0u64 << (start % WORD_BITS);
    let tail = !0u64 >> (WORD_BITS - 1 - (end - 1) % WORD_BITS);
    let apply = |w: &mut u64, m: u64| if SET { *w |= m } else { *w &= !m };
    apply(&mut map[first], head);
    fill_words(&mut map[first + 1..last], if SET { !0 } else { 0 });
    apply(&mut map[last], tail);
}

/// Mask of `len` bits from bit `start` when they lie in one word, else
/// `None`: the common case on the allocation path (small areas, single
/// blocks), done without the general word loop.
#[inline]
fn one_word_mask(start: usize, len: usize) -> Option<(usize, u64)> {
    let lo = start % WORD_BITS;
    (len != 0 && lo + len <= WORD_BITS).then(|| {
        let bits = if len == WORD_BITS { !0 } else { ((1u64 << len) - 1) << lo };
        (start / WORD_BITS, bits)
    })
}

/// `bitmap_set(map, start, len)`.
#[inline]
pub(crate) fn set_range(map: &mut [u64], start: usize, len: usize) {
    match one_word_mask(start, len) {
        Some((idx, mask)) => map[idx] |= mask,
        None if len != 0 => write_words::<true>(map, start, start + len),
        None => {}
    }
}

/// `bitmap_clear(map, start, len)`.
#[inline]
pub(crate) fn clear_range(map: &mut [u64], start: usize, len: usize) {
    match one_word_mask(start, len) {
        Some((idx, mask)) => map[idx] &= !mask,
        None if len != 0 => write_words::<false>(map, start, start + len),
        None => {}
    }
}

/// First bit in `[start, end)` whose value is `want`, or `end` if none.
/// `invert` turns a search for zeros into a search for ones.
#[inline]
fn next_with(map: &[u64], start: usize, end: usize, invert: u64) -> usize {
    if start >= end {
        return end;
    }
    let (first, last) = (start / WORD_BITS, (end - 1) / WORD_BITS);
    let head = (map[first] ^ invert) & (!0u64 << (start % WORD_BITS));
    if head != 0 {
        return (first * WORD_BITS + head.trailing_zeros() as usize).min(end);
    }
    // a slice iterator: no bounds check or end test per word
    for (i, &w) in map[first + 1..=last].iter().enumerate() {
        let w = w ^ invert;
        if w != 0 {
            return ((first + 1 + i) * WORD_BITS + w.trailing_zeros() as usize).min(end);
        }
    }
    end
}

/// `find_next_bit`: first set bit in `[start, end)`, or `end`.
#[inline]
pub(crate) fn next_set(map: &[u64], start: usize, end: usize) -> usize {
    next_with(map, start, end, 0)
}

/// `find_next_zero_bit`: first clear bit in `[start, end)`, or `end`.
#[inline]
pub(crate) fn next_zero(map: &[u64], start: usize, end: usize) -> usize {
    next_with(map, start, end, !0)
}

/// First clear bit in `[start, end)` whose index is a multiple of
/// `align_mask + 1` (a power of two), or `end`.  Word masks skip every
/// busy or misaligned position at once, which is what makes aligned
/// searches through a map full of one-bit holes cheap.
pub(crate) fn next_aligned_zero(map: &[u64], start: usize, end: usize, align_mask: usize) -> usize {
    if align_mask == 0 {
        // every position is aligned
        return next_zero(map, start, end);
    }
    let align = align_mask + 1;
    let mut p = (start + align_mask) & !align_mask;
    if align >= WORD_BITS {
        while p < end {
            if !test_bit(map, p) {
                return p;
            }
            p += align;
        }
        return end;
    }
    // Bit i of the pattern is set where i is a multiple of `align`:
    // all-ones divided by 2^align - 1 repeats a 1 every `align` bits.
    let pattern = u64::MAX / ((1u64 << align) - 1);
    while p < end {
        let word = p / WORD_BITS;
        let mut candidates = !map[word] & pattern & (!0u64 << (p % WORD_BITS));
        let word_end = (word + 1) * WORD_BITS;
        if word_end > end {
            candidates &= (1u64 << (end - word * WORD_BITS)) - 1;
        }
        if candidates != 0 {
            return word * WORD_BITS + candidates.trailing_zeros() as usize;
        }
        p = word_end;
    }
    end
}

/// `find_last_bit` over a sub-range: the last set bit in `[start, end)`.
#[inline]
pub(crate) fn prev_set(map: &[u64], start: usize, end: usize) -> Option<usize> {
    if start >= end {
        return None;
    }
    let mut idx = (end - 1) / WORD_BITS;
    let mut word = map[idx] & word_mask(0, (end - 1) % WORD_BITS + 1);
    loop {
        if word != 0 {
            let bit = idx * WORD_BITS + (WORD_BITS - 1 - word.leading_zeros() as usize);
            return (bit >= start).then_some(bit);
        }
        if idx * WORD_BITS <= start {
            return None;
        }
        idx -= 1;
        word = map[idx];
    }
}

/// Number of set bits in `[start, end)`.
pub(crate) fn count_ones(map: &[u64], start: usize, end: usize) -> usize {
    if start >= end {
        return 0;
    }
    let (first, last) = (start / WORD_BITS, (end - 1) / WORD_BITS);
    if first == last {
        return (map[first] & word_mask(start % WORD_BITS, (end - 1) % WORD_BITS + 1)).count_ones() as usize;
    }
    let head = (map[first] & word_mask(start % WORD_BITS, WORD_BITS)).count_ones() as usize;
    let body: usize = map[first + 1..last].iter().map(|w| w.count_ones() as usize).sum();
    let tail = (map[last] & word_mask(0, (end - 1) % WORD_BITS + 1)).count_ones() as usize;
    head + body + tail
}

/// Iterator over the maximal runs of clear bits (`want_set == false`) or set
/// bits (`want_set == true`) inside `[start, end)`, like the kernel's
/// `for_each_clear_bitrange_from` / `pcpu_for_each_pop_region`.
pub(crate) fn runs(
    map: &[u64],
    start: usize,
    end: usize,
    want_set: bool,
) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut pos = start;
    std::iter::from_fn(move || {
        let (rs, re);
        if want_set {
            rs = next_set(map, pos, end);
            re = next_zero(map, rs, end);
        } else {
            rs = next_zero(map, pos, end);
            re = next_set(map, rs, end);
        }
        if rs >= re {
            pos = end;
            return None;
        }
        pos = re;
        Some(rs..re)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive_next(bits: &[bool], start: usize, end: usize, want: bool) -> usize {
        (start..end).find(|&i| bits[i] == want).unwrap_or(end)
    }

    fn to_words(bits: &[bool]) -> Vec<u64> {
        let mut map = vec![0u64; words_for(bits.len())];
        for (i, &b) in bits.iter().enumerate() {
            if b {
                set_bit(&mut map, i);
            }
        }
        map
    }

    proptest! {
        #[test]
        fn searches_match_naive_loops(
            bits in prop::collection::vec(prop::bool::weighted(0.3), 1..300),
            a in 0usize..320, b in 0usize..320,
        ) {
            let map = to_words(&bits);
            let n = bits.len();
            let (start, end) = (a.min(n), b.min(n));
            prop_assert_eq!(next_set(&map, start, end), naive_next(&bits, start, end, true));
            prop_assert_eq!(next_zero(&map, start, end), naive_next(&bits, start, end, false));
            let naive_prev = (start..end).rev().find(|&i| bits[i]);
            prop_assert_eq!(prev_set(&map, start, end), naive_prev);
            let naive_count = (start..end).filter(|&i| bits[i]).count();
            prop_assert_eq!(count_ones(&map, start, end), naive_count);
            for want in [false, true] {
                let got: Vec<_> = runs(&map, start, end, want).collect();
                let mut expect = Vec::new();
                let mut i = start;
                while i < end {
                    if bits[i] == want {
                        let j = (i..end).find(|&j| bits[j] != want).unwrap_or(end);
                        expect.push(i..j);
                        i = j;
                    } else {
                        i += 1;
                    }
                }
                prop_assert_eq!(got, expect);
            }
        }

        #[test]
        fn set_and_clear_ranges_touch_exactly_the_range(
            bits in prop::collection::vec(any::<bool>(), 1..300),
            a in 0usize..300, len in 0usize..300, set in any::<bool>(),
        ) {
            let n = bits.len();
            let start = a.min(n);
            let len = len.min(n - start);
            let mut map = to_words(&bits);
            if set { set_range(&mut map, start, len) } else { clear_range(&mut map, start, len) }
            for (i, &before) in bits.iter().enumerate() {
                let expect = if (start..start + len).contains(&i) { set } else { before };
                prop_assert_eq!(test_bit(&map, i), expect, "bit {}", i);
            }
        }
    }

    #[test]
    fn single_bit_ops_and_word_edges() {
        let mut map = vec![0u64; 3];
        set_bit(&mut map, 63);
        set_bit(&mut map, 64);
        assert!(test_bit(&map, 63) && test_bit(&map, 64));
        assert_eq!(next_set(&map, 0, 192), 63);
        assert_eq!(prev_set(&map, 0, 192), Some(64));
        assert_eq!(prev_set(&map, 0, 64), Some(63));
        assert_eq!(next_zero(&map, 63, 192), 65);
        clear_bit(&mut map, 63);
        assert_eq!(next_set(&map, 0, 64), 64, "search stops at end");
        set_range(&mut map, 0, 192);
        assert_eq!(map, vec![!0; 3]);
        assert_eq!(next_zero(&map, 0, 192), 192);
        assert_eq!(words_for(1024), 16);
        assert_eq!(words_for(1025), 17);
    }

    proptest! {
        #[test]
        fn next_aligned_zero_matches_naive(
            bits in proptest::collection::vec(any::<bool>(), 1..400),
            start in 0usize..400,
            end in 0usize..400,
            align_shift in 0u32..8,
        ) {
            let len = bits.len();
            let (start, end) = (start.min(len), end.min(len));
            let mut map = vec![0u64; len.div_ceil(WORD_BITS)];
            for (i, &b) in bits.iter().enumerate() {
                if b {
                    set_bit(&mut map, i);
                }
            }
            let align = 1usize << align_shift;
            let naive = (start..end).find(|&i| i % align == 0 && !bits[i]).unwrap_or(end);
            prop_assert_eq!(next_aligned_zero(&map, start, end, align - 1), naive);
        }
    }
}
