//! The model's side: [`Percpu`] with the km backend, set up as the generic
//! `setup_per_cpu_areas` of the kernel profile sets it up (embed first
//! chunk, page atoms, module reserve, dynamic reserve) for a UMA machine;
//! its alloc info is what the real side is given.

use percpu_core::addr::AddressSpace;
use percpu_core::alloc::{AllocRequest, PcpuPtr};
use percpu_core::backend::BackendKind;
use percpu_core::cpus::{CpuSet, Topology};
use percpu_core::percpu::{ChunkRole, Percpu, PercpuConfig, PercpuSetupError};
use percpu_core::profile::KernelProfile;

use super::{ChunkObs, Op, OpResult, Setup, State};
use crate::harness::diff::md_values;

/// What decides both sides' geometry.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub cpus: u32,
    /// `__per_cpu_end - __per_cpu_start` of the imagined kernel image.
    pub static_size: usize,
    /// The reserved (module) region; `None`: the profile's module reserve.
    pub reserved_size: Option<usize>,
    pub kernel: KernelProfile,
}

impl ModelConfig {
    /// 64-bit, 4 KiB pages (the host's, which the real side runs on); the
    /// linear map is where km chunks come from, large enough for thousands.
    pub fn percpu_config(&self) -> PercpuConfig {
        let space = AddressSpace::new(64, 4096, 0x8000_0000..0x80_0000_0000, 0x100_0000_0000..0x200_0000_0000)
            .expect("a valid address space");
        let topo = Topology::uma(CpuSet::first_n(self.cpus));
        let generic = PercpuConfig::generic_for(&self.kernel, space, topo, self.static_size);
        PercpuConfig {
            backend: BackendKind::Km,
            per_cpu_start: 0x8000_0000,
            reserved_size: self.reserved_size.unwrap_or(generic.reserved_size),
            ..generic
        }
    }
}

/// The model allocator and the pointers of the operations' allocations.
pub struct Model {
    pub p: Percpu,
    ptrs: Vec<Option<PcpuPtr>>,
}

impl Model {
    pub fn new(cfg: &ModelConfig) -> Result<Self, PercpuSetupError> {
        Ok(Model { p: Percpu::new(cfg.percpu_config())?, ptrs: Vec::new() })
    }

    /// The alloc info the real side's `pcpu_setup_first_chunk` gets.  The
    /// driver maps unit i to CPU i, so the model's map must be that.
    pub fn setup(&self, cfg: &ModelConfig) -> Result<Setup, String> {
        let ai = &self.p.first_chunk_layout().ai;
        if ai.groups.len() != 1 {
            return Err(format!("the model formed {} groups; percpu-km takes one", ai.groups.len()));
        }
        let g = &ai.groups[0];
        let identity = g.cpu_map.iter().enumerate().all(|(i, c)| match c {
            Some(c) => *c as usize == i && i < cfg.cpus as usize,
            None => i >= cfg.cpus as usize,
        });
        if !identity || g.base_offset != 0 {
            return Err(format!("unexpected unit map {:?} at offset {}", g.cpu_map, g.base_offset));
        }
        Ok(Setup {
            cpus: cfg.cpus as usize,
            nr_units: g.nr_units,
            static_size: ai.static_size,
            reserved_size: ai.reserved_size,
            dyn_size: ai.dyn_size,
            unit_size: ai.unit_size,
            atom_size: ai.atom_size,
            alloc_size: ai.alloc_size,
        })
    }

    pub fn reserved_ord(&self) -> Option<usize> {
        self.p.reserved_chunk_id()
    }

    pub fn apply(&mut self, op: &Op) -> OpResult {
        match *op {
            Op::Alloc { id, size, align, reserved, atomic } => {
                let req = AllocRequest { size: size as usize, align: align as usize, reserved, atomic };
                let ptr = self.p.alloc(req).ok();
                let id = id as usize;
                if self.ptrs.len() <= id {
                    self.ptrs.resize(id + 1, None);
                }
                self.ptrs[id] = ptr;
                OpResult::Alloc(ptr.map(|ptr| {
                    let addr = self.p.pcpu_ptr_to_addr(ptr);
                    let c = self.p.chunk_addr_search(addr).expect("the model finds its own allocation");
                    (c, addr.wrapping_sub(self.p.chunk(c).base_addr) as usize)
                }))
            }
            Op::Free { id } => match self.ptrs.get_mut(id as usize).and_then(Option::take) {
                // a refusal would be a model bug: it shows as a divergence
                Some(ptr) => OpResult::Free(self.p.free(ptr).is_ok()),
                None => OpResult::Free(false),
            },
            Op::Balance => {
                self.p.balance();
                OpResult::Balance
            }
        }
    }

    pub fn state(&self) -> State {
        let p = &self.p;
        let slots = (0..p.nr_slots())
            .filter_map(|s| {
                let l: Vec<usize> = p.slot_list(s).collect();
                (!l.is_empty()).then_some((s, l))
            })
            .collect();
        let chunks = p
            .chunks()
            .map(|c| {
                let h = c.map.chunk_hints();
                ChunkObs {
                    ord: c.id,
                    free_bytes: c.map.free_bytes() as i64,
                    md: md_values(&h),
                    nr_populated: c.map.nr_populated() as i64,
                    nr_empty_pop_pages: c.map.nr_empty_pop_pages() as i64,
                    isolated: c.isolated,
                }
            })
            .collect();
        State {
            nr_empty_pop_pages: p.nr_empty_pop_pages() as i64,
            nr_populated: p.nr_populated() as i64,
            balance_scheduled: p.balance_pending(),
            nr_slots: p.nr_slots(),
            nr_chunks: p.nr_chunks(),
            slots,
            chunks,
        }
    }

    /// Whether chunk `ord` is the reserved chunk.
    pub fn is_reserved(&self, ord: usize) -> bool {
        self.p.chunk_opt(ord).is_some_and(|c| c.role == ChunkRole::Reserved)
    }
}
