//! Address classification: turn any address an emulated access touched
//! into (chunk, unit, CPU, page, offset, populated?, allocation), the
//! vocabulary every percpu-bed diagnostic speaks.

use std::fmt;
use std::ops::Range;

use serde::Serialize;

use super::{ChunkId, ChunkRole, Percpu};
use crate::alloc::PcpuPtr;
use crate::consts::PCPU_MIN_ALLOC_SHIFT;

/// Which part of a unit an address falls in.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// The kernel image's static percpu copy (first chunk head).
    Static,
    /// The reserved chunk (module static percpu).
    Reserved,
    /// The first chunk's dynamic region.
    Dynamic,
    /// First-chunk unit space past static+reserved+dynamic (freed by embed).
    Unused,
    /// A chunk created by the backend.
    Chunk,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Region::Static => "static",
            Region::Reserved => "reserved",
            Region::Dynamic => "dynamic",
            Region::Unused => "unused",
            Region::Chunk => "chunk",
        })
    }
}

/// Where an address lies in the percpu areas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    pub addr: u64,
    pub chunk: ChunkId,
    pub role: ChunkRole,
    pub region: Region,
    pub group: usize,
    pub unit: usize,
    /// The CPU owning the unit (None for an unused unit).
    pub cpu: Option<u32>,
    /// Byte offset inside the unit.
    pub offset: u64,
    /// Page index inside the unit.
    pub page: usize,
    /// Whether memory backs the address (populated page / embed area).
    pub populated: bool,
    /// Unit offsets of the allocation holding the address, if any.
    pub allocation: Option<Range<u64>>,
    /// The percpu pointer naming this byte (what `this_cpu_ptr` undoes).
    pub pcpu_ptr: PcpuPtr,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chunk {} unit {} ", self.chunk, self.unit)?;
        match self.cpu {
            Some(cpu) => write!(f, "(cpu {cpu}) ")?,
            None => write!(f, "(no cpu) ")?,
        }
        write!(f, "offset {:#x} page {} [{}", self.offset, self.page, self.region)?;
        f.write_str(if self.populated { ", populated" } else { ", unpopulated" })?;
        if let Some(a) = &self.allocation {
            write!(f, ", in allocation {:#x}..{:#x}", a.start, a.end)?;
        }
        write!(f, "]")
    }
}

impl Percpu {
    /// Classify a dereferenceable address (a unit copy, i.e. after
    /// `per_cpu_ptr`).  None when it lies in no chunk's units.
    pub fn classify(&self, addr: u64) -> Option<Location> {
        let first = &self.first;
        if let Some((group, unit, offset)) = self.locate_unit(first.base_addr, addr) {
            let static_end = first.static_size as u64;
            let reserved_end = static_end + first.reserved_size as u64;
            let dyn_end = reserved_end + first.dyn_size as u64;
            let (region, chunk) = match offset {
                o if o < static_end => (Region::Static, self.first_chunk),
                o if o < reserved_end => (Region::Reserved, self.reserved_chunk.unwrap_or(self.first_chunk)),
                o if o < dyn_end => (Region::Dynamic, self.first_chunk),
                _ => (Region::Unused, self.first_chunk),
            };
            let populated = first.backed.iter().any(|r| r.contains(&addr));
            let allocation = match region {
                Region::Reserved | Region::Dynamic => self.allocation_at(chunk, first.base_addr + offset),
                _ => None,
            };
            return Some(self.location(addr, chunk, region, group, unit, offset, populated, allocation));
        }
        for c in self.chunks().filter(|c| c.role == ChunkRole::Dynamic) {
            if let Some((group, unit, offset)) = self.locate_unit(c.base_addr, addr) {
                let page = (offset / self.geom.page_size) as usize;
                let populated = c.map.is_page_populated(page);
                let allocation = self.allocation_at(c.id, c.base_addr + offset);
                return Some(self.location(addr, c.id, Region::Chunk, group, unit, offset, populated, allocation));
            }
        }
        None
    }

    /// Classify a percpu pointer (before `per_cpu_ptr`): where its unit-0
    /// copy would be.  Useful for pointers the code computed itself.
    pub fn classify_ptr(&self, ptr: PcpuPtr) -> Option<Location> {
        let addr = self.pcpu_ptr_to_addr(ptr);
        let unit0 = self.geom.unit_offsets.first().copied().unwrap_or(0);
        self.classify(addr.wrapping_add(unit0))
    }

    #[allow(clippy::too_many_arguments)]
    fn location(
        &self,
        addr: u64,
        chunk: ChunkId,
        region: Region,
        group: usize,
        unit: usize,
        offset: u64,
        populated: bool,
        allocation: Option<Range<u64>>,
    ) -> Location {
        let base = self.chunk(chunk).base_addr;
        let unit_base = match region {
            Region::Chunk => base,
            _ => self.first.base_addr,
        };
        Location {
            addr,
            chunk,
            role: self.chunk(chunk).role,
            region,
            group,
            unit,
            cpu: self.first.unit_cpu.get(unit).copied().flatten(),
            offset,
            page: (offset / self.geom.page_size) as usize,
            populated,
            allocation,
            pcpu_ptr: self.addr_to_pcpu_ptr(unit_base.wrapping_add(offset)),
        }
    }

    /// (group, unit, offset in unit) of `addr` among the units of a chunk
    /// whose base is `base`.
    fn locate_unit(&self, base: u64, addr: u64) -> Option<(usize, usize, u64)> {
        let unit_size = self.geom.unit_size;
        let mut first_unit = 0;
        for (group, (&goff, &gsize)) in self.geom.group_offsets.iter().zip(&self.geom.group_sizes).enumerate() {
            let start = base.wrapping_add(goff);
            let rel = addr.wrapping_sub(start);
            if rel < gsize {
                let unit = first_unit + (rel / unit_size) as usize;
                return Some((group, unit, rel % unit_size));
            }
            first_unit += (gsize / unit_size) as usize;
        }
        None
    }

    /// The allocation of chunk `id` covering the unit-0-relative address
    /// `unit_addr`, as unit offsets.
    fn allocation_at(&self, id: ChunkId, unit_addr: u64) -> Option<Range<u64>> {
        let c = self.chunk(id);
        let off = unit_addr.checked_sub(c.base_addr)?;
        let bits = c.map.allocation_containing((off >> PCPU_MIN_ALLOC_SHIFT) as usize)?;
        let unit_off = |bit: usize| unit_addr - off + ((bit as u64) << PCPU_MIN_ALLOC_SHIFT) - self.unit_base_of(id);
        Some(unit_off(bits.start)..unit_off(bits.end))
    }

    /// The address `base` that unit offsets of chunk `id` are counted from.
    fn unit_base_of(&self, id: ChunkId) -> u64 {
        match self.chunk(id).role {
            ChunkRole::Dynamic => self.chunk(id).base_addr,
            _ => self.first.base_addr,
        }
    }
}
