//! The chunk slot lists both area-map models walk: `pcpu_slot[]`, an array
//! of `<linux/list.h>` heads, with each chunk's `list` member on at most one
//! of them.  The order on a list matters (the allocation walk takes the
//! first chunk that fits, `list_move` puts at the head, `list_move_tail` at
//! the tail), so the lists are kept as the kernel keeps them: circular,
//! doubly linked, one node per head and one per chunk id.  The helpers for
//! slot numbers (`fls`, `__pcpu_size_to_slot`, `ALIGN`) are shared too: the
//! 2009 and the 2014 map compute them the same way.

use crate::consts::PCPU_SLOT_BASE_SHIFT;

/// `fls()`: 1-based index of the highest set bit, 0 for 0.
pub(crate) fn fls(x: i32) -> i32 {
    32 - (x as u32).leading_zeros() as i32
}

/// `__pcpu_size_to_slot`: `max(fls(size) - PCPU_SLOT_BASE_SHIFT + 2, 1)`.
pub(crate) fn size_to_slot_raw(size: i32) -> usize {
    (fls(size) - PCPU_SLOT_BASE_SHIFT as i32 + 2).max(1) as usize
}

/// `ALIGN(off, align)` for a power-of-two `align`.
pub(crate) fn align_int(off: i32, align: i32) -> i32 {
    (off + align - 1) & !(align - 1)
}

/// Circular doubly linked lists: node `s < nr_slots` is the head of slot
/// `s`, node `nr_slots + id` is chunk `id`'s `list` member.
#[derive(Clone, Debug)]
pub(crate) struct SlotLists {
    nr_slots: usize,
    prev: Vec<usize>,
    next: Vec<usize>,
}

impl SlotLists {
    pub(crate) fn new(nr_slots: usize) -> Self {
        SlotLists { nr_slots, prev: (0..nr_slots).collect(), next: (0..nr_slots).collect() }
    }

    /// Make sure chunk `id` has a node (unlinked, `INIT_LIST_HEAD`).
    pub(crate) fn ensure_chunk(&mut self, id: usize) {
        while self.prev.len() <= self.nr_slots + id {
            let n = self.prev.len();
            self.prev.push(n);
            self.next.push(n);
        }
    }

    /// The node of chunk `id`.
    pub(crate) fn node(&self, id: usize) -> usize {
        self.nr_slots + id
    }

    /// The node after `n` (a head or a chunk node).
    pub(crate) fn next(&self, n: usize) -> usize {
        self.next[n]
    }

    /// The chunk id of node `n`, `None` for a head.
    pub(crate) fn chunk_of(&self, n: usize) -> Option<usize> {
        n.checked_sub(self.nr_slots)
    }

    /// `list_del_init` of chunk `id`.
    pub(crate) fn del_init(&mut self, id: usize) {
        let n = self.node(id);
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = x;
        self.prev[x] = p;
        self.prev[n] = n;
        self.next[n] = n;
    }

    /// `list_move`: chunk `id` to the head of slot `slot`.
    pub(crate) fn move_to_head(&mut self, id: usize, slot: usize) {
        self.del_init(id);
        let n = self.node(id);
        let x = self.next[slot];
        self.next[n] = x;
        self.prev[n] = slot;
        self.prev[x] = n;
        self.next[slot] = n;
    }

    /// `list_move_tail`: chunk `id` to the tail of slot `slot`.
    pub(crate) fn move_to_tail(&mut self, id: usize, slot: usize) {
        self.del_init(id);
        let n = self.node(id);
        let p = self.prev[slot];
        self.prev[n] = p;
        self.next[n] = slot;
        self.next[p] = n;
        self.prev[slot] = n;
    }

    /// `pcpu_chunk_relocate`'s list move: up (or new, `oslot == None`, the
    /// kernel's -1) goes to the head, down to the tail.
    pub(crate) fn relocate(&mut self, id: usize, oslot: Option<usize>, nslot: usize) {
        if oslot == Some(nslot) {
            return;
        }
        if oslot.is_none_or(|o| o < nslot) {
            self.move_to_head(id, nslot);
        } else {
            self.move_to_tail(id, nslot);
        }
    }

    /// Chunk ids on slot `slot`, head first.
    pub(crate) fn list(&self, slot: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut n = self.next[slot];
        while n != slot {
            out.push(n - self.nr_slots);
            n = self.next[n];
        }
        out
    }

    /// Whether chunk `id`'s node is on some list.
    pub(crate) fn is_linked(&self, id: usize) -> bool {
        let n = self.node(id);
        n < self.next.len() && self.next[n] != n
    }

    /// Check the links and return, for every chunk id below `nr_ids`, the
    /// slot it sits on; `alive(id)` says which ids may be linked.
    pub(crate) fn check(&self, nr_ids: usize, alive: impl Fn(usize) -> bool) -> Result<Vec<Option<usize>>, String> {
        let mut on_slot = vec![None; nr_ids];
        for slot in 0..self.nr_slots {
            let mut n = slot;
            let mut steps = 0;
            loop {
                let x = self.next[n];
                if self.prev[x] != n {
                    return Err(format!("slot {slot}: broken list link at node {n}"));
                }
                if x == slot {
                    break;
                }
                if x < self.nr_slots {
                    return Err(format!("slot {slot}: list runs into the head of slot {x}"));
                }
                let id = x - self.nr_slots;
                if id >= nr_ids || !alive(id) {
                    return Err(format!("slot {slot}: dead chunk {id} on the list"));
                }
                if let Some(s) = on_slot[id] {
                    return Err(format!("chunk {id} is on slot {s} and slot {slot}"));
                }
                on_slot[id] = Some(slot);
                n = x;
                steps += 1;
                if steps > nr_ids {
                    return Err(format!("slot {slot}: list cycle"));
                }
            }
        }
        for id in 0..nr_ids {
            if !alive(id) && self.is_linked(id) {
                return Err(format!("dead chunk {id} is still linked"));
            }
        }
        Ok(on_slot)
    }
}
