//! `pcpu_chunk_lists[]`: one doubly linked list of chunks per slot.
//!
//! The kernel's `list_move` (to the head) and `list_move_tail` decide which
//! chunk the allocation loop tries first, so the model keeps real ordered
//! lists, linked through per-chunk `prev`/`next` indices: moving a chunk is
//! O(1) and iteration can save `next` first, as `list_for_each_entry_safe`.

/// Slot lists over chunk ids `0..`.
#[derive(Clone, Debug, Default)]
pub struct SlotLists {
    head: Vec<Option<usize>>,
    tail: Vec<Option<usize>>,
    next: Vec<Option<usize>>,
    prev: Vec<Option<usize>>,
    slot_of: Vec<Option<usize>>,
}

impl SlotLists {
    pub fn new(nr_slots: usize) -> Self {
        SlotLists { head: vec![None; nr_slots], tail: vec![None; nr_slots], ..Default::default() }
    }

    pub fn nr_slots(&self) -> usize {
        self.head.len()
    }

    fn ensure(&mut self, id: usize) {
        if id >= self.slot_of.len() {
            self.next.resize(id + 1, None);
            self.prev.resize(id + 1, None);
            self.slot_of.resize(id + 1, None);
        }
    }

    /// The slot a chunk is listed in, if any.
    pub fn slot_of(&self, id: usize) -> Option<usize> {
        self.slot_of.get(id).copied().flatten()
    }

    pub fn first(&self, slot: usize) -> Option<usize> {
        self.head[slot]
    }

    pub fn next(&self, id: usize) -> Option<usize> {
        self.next[id]
    }

    pub fn is_empty(&self, slot: usize) -> bool {
        self.head[slot].is_none()
    }

    /// `list_del`.
    pub fn remove(&mut self, id: usize) {
        let Some(slot) = self.slot_of(id) else { return };
        let (p, n) = (self.prev[id], self.next[id]);
        match p {
            Some(p) => self.next[p] = n,
            None => self.head[slot] = n,
        }
        match n {
            Some(n) => self.prev[n] = p,
            None => self.tail[slot] = p,
        }
        self.prev[id] = None;
        self.next[id] = None;
        self.slot_of[id] = None;
    }

    /// `list_move(&chunk->list, &slot)`: unlink and insert at the head.
    pub fn move_front(&mut self, id: usize, slot: usize) {
        self.ensure(id);
        self.remove(id);
        let old = self.head[slot];
        self.next[id] = old;
        match old {
            Some(o) => self.prev[o] = Some(id),
            None => self.tail[slot] = Some(id),
        }
        self.head[slot] = Some(id);
        self.slot_of[id] = Some(slot);
    }

    /// `list_move_tail(&chunk->list, &slot)`.
    pub fn move_tail(&mut self, id: usize, slot: usize) {
        self.ensure(id);
        self.remove(id);
        let old = self.tail[slot];
        self.prev[id] = old;
        match old {
            Some(o) => self.next[o] = Some(id),
            None => self.head[slot] = Some(id),
        }
        self.tail[slot] = Some(id);
        self.slot_of[id] = Some(slot);
    }

    /// Chunks of one slot, head first.
    pub fn iter(&self, slot: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.head[slot], move |&id| self.next[id])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_and_tail_moves_keep_kernel_order() {
        let mut s = SlotLists::new(3);
        s.move_tail(0, 1);
        s.move_tail(1, 1);
        s.move_front(2, 1);
        assert_eq!(s.iter(1).collect::<Vec<_>>(), vec![2, 0, 1]);
        s.move_front(1, 2);
        assert_eq!(s.iter(1).collect::<Vec<_>>(), vec![2, 0]);
        assert_eq!(s.slot_of(1), Some(2));
        s.remove(2);
        s.remove(0);
        assert!(s.is_empty(1));
        assert_eq!(s.slot_of(0), None);
    }
}
