//! The invariants of the 2014 map ([`super::AreaMap2014Allocator::verify`]):
//! the shared chunk bookkeeping first, then each chunk's offsets with
//! their in-use bits, and `pcpu_nr_empty_pop_pages`.

use super::{AreaMap2014Allocator, Chunk};

impl AreaMap2014Allocator {
    /// Check every invariant the kernel relies on.
    pub fn verify(&self) -> Result<(), String> {
        // Slot lists, slots, the vm lookup and the populated counts.
        self.slots.check()?;
        let mut empty = 0i64;
        for (id, c) in self.slots.chunks.iter().enumerate() {
            let Some(c) = c else { continue };
            self.verify_map(id, c)?;
            if c.on_extend_list != self.extend_list.contains(&id) {
                return Err(format!("chunk {id}: on_extend_list {} disagrees with the list", c.on_extend_list));
            }
            if Some(id) != self.slots.reserved_chunk {
                empty += self.empty_pop_pages_of(id) as i64;
            }
        }
        if empty != self.nr_empty_pop_pages {
            return Err(format!("pcpu_nr_empty_pop_pages is {}, the chunks have {empty}", self.nr_empty_pop_pages));
        }
        Ok(())
    }

    fn verify_map(&self, id: usize, c: &Chunk) -> Result<(), String> {
        let page = 1usize << self.page_shift;
        if c.map_used == 0 || c.map_used >= c.map.len() {
            return Err(format!("chunk {id}: map_used {} with map_alloc {}", c.map_used, c.map.len()));
        }
        if c.map[0] & !1 != 0 || !c.in_use(c.map_used) {
            return Err(format!("chunk {id}: map starts at {:#x}, sentry {:#x}", c.map[0], c.map[c.map_used]));
        }
        let want_end =
            if Some(id) == self.slots.reserved_chunk { self.slots.reserved_limit as i32 } else { self.unit_size };
        if c.end() != want_end {
            return Err(format!("chunk {id}: the sentry ends the map at {:#x}, not {want_end:#x}", c.end()));
        }
        let (mut free, mut largest) = (0, 0);
        for i in 0..c.map_used {
            let (s, e) = (c.start(i), c.start(i + 1));
            if s % 2 != 0 || e <= s {
                return Err(format!("chunk {id}: entry {i} is [{s:#x}, {e:#x})"));
            }
            if !c.in_use(i) {
                if i > 0 && !c.in_use(i - 1) {
                    return Err(format!("chunk {id}: free areas {} and {i} are not merged", i - 1));
                }
                if i < c.first_free {
                    return Err(format!("chunk {id}: free entry {i} below first_free {}", c.first_free));
                }
                free += e - s;
                largest = largest.max(e - s);
            } else if !(c.immutable || c.has_reserved && i == 0) {
                // Requested bytes are populated; a kept tail and a later
                // neighbour's head (2 bytes each) may not be.
                let end = (e as usize).saturating_sub(4).max(s as usize + 1);
                if let Some(p) = (s as usize / page..end.div_ceil(page)).find(|&p| !c.populated.get(p)) {
                    return Err(format!("chunk {id}: area at {s:#x} has page {p} unpopulated"));
                }
            }
        }
        if c.first_free > c.map_used {
            return Err(format!("chunk {id}: first_free {} past map_used {}", c.first_free, c.map_used));
        }
        if free != c.free_size {
            return Err(format!("chunk {id}: free_size {} but free areas sum to {free}", c.free_size));
        }
        if c.contig_hint < largest {
            return Err(format!("chunk {id}: contig_hint {} below the largest free area {largest}", c.contig_hint));
        }
        if c.has_reserved && !c.in_use(0) {
            return Err(format!("chunk {id}: the hidden first area is free"));
        }
        Ok(())
    }
}
