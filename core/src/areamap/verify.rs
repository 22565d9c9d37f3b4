//! The invariants of the 2009 map ([`super::AreaMapAllocator::verify`]):
//! the shared chunk bookkeeping first, then each chunk's signed sizes.

use super::chunks::SlotChunk;
use super::{AreaMapAllocator, Chunk};

impl AreaMapAllocator {
    /// Check every invariant the kernel relies on; the message names the
    /// chunk and the numbers.
    pub fn verify(&self) -> Result<(), String> {
        // Slot lists, slots, the vm lookup and the populated counts.
        self.slots.check()?;
        for (id, c) in self.slots.chunks.iter().enumerate() {
            if let Some(c) = c {
                self.verify_map(id, c)?;
            }
        }
        Ok(())
    }

    fn verify_map(&self, id: usize, c: &Chunk) -> Result<(), String> {
        let page = 1usize << self.page_shift;
        if c.map_used == 0 || c.map_used > c.map.len() {
            return Err(format!("chunk {id}: map_used {} with map_alloc {}", c.map_used, c.map.len()));
        }
        let areas = c.areas();
        let mut sum: i64 = 0;
        let mut free: i64 = 0;
        let mut largest = 0;
        let mut off = 0usize;
        for (i, &e) in areas.iter().enumerate() {
            if e == 0 {
                return Err(format!("chunk {id}: empty area at entry {i}"));
            }
            if e > 0 {
                if i > 0 && areas[i - 1] > 0 {
                    return Err(format!("chunk {id}: free areas {} and {i} are not merged", i - 1));
                }
                free += e as i64;
                largest = largest.max(e);
            } else if !(c.immutable || c.hidden_head && i == 0) {
                // The kernel populated the requested bytes; up to 3 tail
                // bytes and 3 later head bytes may sit beyond them.
                let len = (-e) as usize;
                let end = off + len.saturating_sub(6).max(1);
                for p in off / page..end.div_ceil(page) {
                    if !c.populated().get(p) {
                        return Err(format!(
                            "chunk {id}: area at offset {off:#x} ({len} bytes) has page {p} unpopulated"
                        ));
                    }
                }
            }
            sum += e.unsigned_abs() as i64;
            off += e.unsigned_abs() as usize;
        }
        if sum != c.extent as i64 {
            return Err(format!("chunk {id}: areas sum to {sum:#x}, the map covers {:#x}", c.extent));
        }
        if free != c.free_size as i64 {
            return Err(format!("chunk {id}: free_size {} but free areas sum to {free}", c.free_size));
        }
        // The hint is an upper bound (it may over-report after an
        // allocation that did not scan to the end), never below.
        if c.contig_hint < largest {
            return Err(format!("chunk {id}: contig_hint {} below the largest free area {largest}", c.contig_hint));
        }
        if c.hidden_head && areas[0] >= 0 {
            return Err(format!("chunk {id}: hidden static area is free ({})", areas[0]));
        }
        Ok(())
    }
}
