//! `struct pcpu_block_md` and the hint arithmetic that only looks at one
//! block: `pcpu_init_md_block`, `pcpu_block_update`, `pcpu_next_hint`,
//! `pcpu_check_block_hint`.
//!
//! The same struct serves as a per-page block (offsets relative to the
//! block) and as the chunk-wide `chunk_md` (offsets relative to the chunk),
//! exactly as in the kernel since the 2019 scan_hint series.
//!
//! Fields are `u32` like the kernel's `int`s, so a block costs 32 bytes of
//! metadata; the functions take and return `usize` offsets.

use serde::Serialize;

/// Hints of one metadata block (or of the whole chunk), all in bits.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockMd {
    /// Largest *known* free area before the contig hint (0: none known).
    /// May equal the contig hint and then sits after it.
    pub scan_hint: u32,
    pub scan_hint_start: u32,
    /// Largest free area known; never larger than the true largest area.
    pub contig_hint: u32,
    pub contig_hint_start: u32,
    /// Free bits at the start / end of the block (exact for page blocks).
    pub left_free: u32,
    pub right_free: u32,
    /// No free bit lies before this one (it may itself be allocated).
    pub first_free: u32,
    pub nr_bits: u32,
}

/// A public, read-only copy of one block's (or the chunk's) hints, for
/// statistics, debugging and tests.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockHints {
    pub scan_hint: usize,
    pub scan_hint_start: usize,
    pub contig_hint: usize,
    pub contig_hint_start: usize,
    pub left_free: usize,
    pub right_free: usize,
    pub first_free: usize,
    pub nr_bits: usize,
}

impl From<&BlockMd> for BlockHints {
    fn from(b: &BlockMd) -> Self {
        BlockHints {
            scan_hint: b.scan_hint as usize,
            scan_hint_start: b.scan_hint_start as usize,
            contig_hint: b.contig_hint as usize,
            contig_hint_start: b.contig_hint_start as usize,
            left_free: b.left_free as usize,
            right_free: b.right_free as usize,
            first_free: b.first_free as usize,
            nr_bits: b.nr_bits as usize,
        }
    }
}

/// The inverse, for state imported from the kernel (`import.rs`).
impl From<&BlockHints> for BlockMd {
    fn from(h: &BlockHints) -> Self {
        BlockMd {
            scan_hint: h.scan_hint as u32,
            scan_hint_start: h.scan_hint_start as u32,
            contig_hint: h.contig_hint as u32,
            contig_hint_start: h.contig_hint_start as u32,
            left_free: h.left_free as u32,
            right_free: h.right_free as u32,
            first_free: h.first_free as u32,
            nr_bits: h.nr_bits as u32,
        }
    }
}

/// `ALIGN(x, a)` for a power-of-two `a`.
#[inline]
pub(crate) fn align_up(x: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    (x + align - 1) & !(align - 1)
}

/// `pcpu_region_overlap`: do `[a, b)` and `[x, y)` intersect?
#[inline]
pub(crate) fn regions_overlap(a: usize, b: usize, x: usize, y: usize) -> bool {
    a < y && x < b
}

impl BlockMd {
    /// `pcpu_init_md_block`: a wholly free block of `nr_bits` bits.
    pub(crate) fn new_free(nr_bits: usize) -> Self {
        let n = nr_bits as u32;
        BlockMd {
            scan_hint: 0,
            scan_hint_start: 0,
            contig_hint: n,
            contig_hint_start: 0,
            left_free: n,
            right_free: n,
            first_free: 0,
            nr_bits: n,
        }
    }

    #[inline]
    pub(crate) fn contig(&self) -> (usize, usize) {
        (self.contig_hint_start as usize, self.contig_hint as usize)
    }

    #[inline]
    pub(crate) fn scan(&self) -> (usize, usize) {
        (self.scan_hint_start as usize, self.scan_hint as usize)
    }

    #[inline]
    pub(crate) fn is_wholly_free(&self) -> bool {
        self.contig_hint == self.nr_bits
    }

    /// `pcpu_check_block_hint`: could an aligned request of `bits` fit in
    /// the contig hint?
    #[inline]
    pub(crate) fn fits_contig_hint(&self, bits: usize, align: usize) -> bool {
        let (cs, ch) = self.contig();
        align_up(cs, align) - cs + bits <= ch
    }

    /// `pcpu_next_hint`: where a first-fit scan should start.  Normally
    /// first_free; but when the scan hint exists, lies before the contig hint
    /// and is too small for the request, everything up to its end can be
    /// skipped because the scan hint is the largest area known before the
    /// contig hint.
    #[inline]
    pub(crate) fn next_hint(&self, alloc_bits: usize) -> usize {
        let (ss, sh) = self.scan();
        if sh != 0 && self.contig_hint_start as usize > ss && alloc_bits > sh {
            return ss + sh;
        }
        self.first_free as usize
    }

    /// `pcpu_block_update`: tell the block that `[start, end)` is a free
    /// area.  The area is expected to be the whole free area within the
    /// block.  Among equal contig candidates the better aligned start wins.
    ///
    /// The kernel does this arithmetic in `int`; one caller (the free path's
    /// chunk update, see `hints.rs`) can pass `end < start`, so the length is
    /// signed here to reproduce what the kernel does with it.
    pub(crate) fn update(&mut self, start: usize, end: usize) {
        let contig = end as i64 - start as i64;
        let (cs, ch) = (self.contig_hint_start as usize, self.contig_hint as i64);
        let (ss, sh) = (self.scan_hint_start as usize, self.scan_hint as i64);

        self.first_free = self.first_free.min(start as u32);
        if start == 0 {
            self.left_free = contig.max(0) as u32;
        }
        if end == self.nr_bits as usize {
            self.right_free = contig.max(0) as u32;
        }

        if contig > ch {
            // The new area becomes the contig hint; the old one may become
            // the scan hint if it lies before the new one.
            if start > cs {
                if ch > sh {
                    self.scan_hint_start = cs as u32;
                    self.scan_hint = ch as u32;
                } else if start < ss {
                    // old contig == scan hint (scan hint after it), but the
                    // scan hint must stay before the new contig hint
                    self.scan_hint = 0;
                }
            } else {
                self.scan_hint = 0;
            }
            self.contig_hint_start = start as u32;
            self.contig_hint = contig as u32;
        } else if contig == ch {
            if cs != 0 && (start == 0 || start.trailing_zeros() > cs.trailing_zeros()) {
                // better alignment: move the contig hint here
                self.contig_hint_start = start as u32;
                if start < ss && ch > sh {
                    self.scan_hint = 0;
                }
            } else if start > ss || ch > sh {
                // an equal area: remember it as the scan hint if it is
                // farther than, or larger than, the current one
                self.scan_hint_start = start as u32;
                self.scan_hint = contig as u32;
            }
        } else if start < cs && (contig > sh || (contig == sh && start > ss)) {
            // smaller than the contig hint but a better scan hint
            self.scan_hint_start = start as u32;
            self.scan_hint = contig as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn larger_area_after_contig_demotes_contig_to_scan_hint() {
        let mut b = BlockMd::new_free(1024);
        b.contig_hint = 10;
        b.contig_hint_start = 100;
        b.left_free = 0;
        b.right_free = 0;
        b.first_free = 100;
        b.update(500, 530);
        assert_eq!(b.contig(), (500, 30));
        assert_eq!(b.scan(), (100, 10));
        assert_eq!(b.first_free, 100);
        // an area before the old contig is smaller than the scan hint: ignored
        b.update(50, 55);
        assert_eq!(b.scan(), (100, 10));
        assert_eq!(b.first_free, 50);
        // a larger area before the contig hint replaces the scan hint
        b.update(200, 220);
        assert_eq!(b.scan(), (200, 20));
    }

    #[test]
    fn larger_area_before_contig_clears_scan_hint() {
        let mut b = BlockMd::new_free(1024);
        b.contig_hint = 10;
        b.contig_hint_start = 500;
        b.scan_hint = 5;
        b.scan_hint_start = 100;
        b.update(0, 40);
        assert_eq!(b.contig(), (0, 40));
        assert_eq!(b.scan_hint, 0, "no known area lies before the new contig hint");
        assert_eq!(b.left_free, 40);
    }

    #[test]
    fn equal_area_with_better_alignment_takes_the_contig_hint() {
        let mut b = BlockMd::new_free(1024);
        b.contig_hint = 16;
        b.contig_hint_start = 36; // ffs 2
        b.update(64, 80); // ffs 6
        assert_eq!(b.contig(), (64, 16));
        // a worse aligned equal area farther on becomes the scan hint
        b.update(200, 216); // ffs 3
        assert_eq!(b.scan(), (200, 16));
        assert!(b.scan_hint_start > b.contig_hint_start, "equal scan hint sits after the contig hint");
    }

    #[test]
    fn next_hint_skips_a_too_small_scan_hint() {
        let mut b = BlockMd::new_free(1024);
        b.first_free = 3;
        b.contig_hint = 100;
        b.contig_hint_start = 600;
        b.scan_hint = 20;
        b.scan_hint_start = 300;
        assert_eq!(b.next_hint(21), 320);
        assert_eq!(b.next_hint(20), 3);
        assert!(b.fits_contig_hint(100, 8));
        assert!(!b.fits_contig_hint(100, 16), "600 aligned to 16 is 608");
    }

    #[test]
    fn negative_length_only_moves_first_free() {
        let mut b = BlockMd::new_free(8192);
        b.contig_hint = 10;
        b.contig_hint_start = 4000;
        b.first_free = 3000;
        b.left_free = 0;
        b.right_free = 0;
        let before = b;
        b.update(2048 + 7, 20);
        assert_eq!(b.first_free, 2055);
        assert_eq!(BlockMd { first_free: before.first_free, ..b }, before);
    }
}
