//! `pcpu_chunk_lists[]`: one doubly linked list of chunks per slot.
//!
//! The kernel's `list_move` (to the head) and `list_move_tail` decide which
//! chunk the allocation loop tries first, so the model keeps real ordered
//! lists, linked through per-chunk `prev`/`next` indices: moving a chunk is
//! O(1) and iteration can save `next` first, as `list_for_each_entry_safe`.
//!
//! A bitmap of the non-empty slots is kept as well (not kernel state): the
//! allocation loop visits every slot from the request's size upwards, and
//! most of them are empty, so it jumps to the next non-empty one instead of
//! testing each (the same slots are visited in the same order).

/// Slot lists over chunk ids `0..`.
#[derive(Clone, Debug, Default)]
pub struct SlotLists {
    head: Vec<Option<usize>>,
    tail: Vec<Option<usize>>,
    next: Vec<Option<usize>>,
    prev: Vec<Option<usize>>,
    slot_of: Vec<Option<usize>>,
    /// Bit `s` set exactly when slot `s`'s list is not empty.
    nonempty: Vec<u64>,
}

impl SlotLists {
    pub fn new(nr_slots: usize) -> Self {
        SlotLists {
            head: vec![None; nr_slots],
            tail: vec![None; nr_slots],
            nonempty: vec![0; nr_slots.div_ceil(64)],
            ..Default::default()
        }
    }

    /// The first non-empty slot in `[from, to]`, if any.
    pub fn next_nonempty(&self, from: usize, to: usize) -> Option<usize> {
        let end = to.min(self.head.len() - 1) + 1;
        let mut idx = from / 64;
        if from >= end {
            return None;
        }
        let mut word = self.nonempty[idx] & (!0u64 << (from % 64));
        loop {
            if word != 0 {
                let slot = idx * 64 + word.trailing_zeros() as usize;
                return (slot < end).then_some(slot);
            }
            idx += 1;
            if idx * 64 >= end {
                return None;
            }
            word = self.nonempty[idx];
        }
    }

    fn mark_nonempty(&mut self, slot: usize) {
        self.nonempty[slot / 64] |= 1 << (slot % 64);
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
            None => {
                self.head[slot] = n;
                if n.is_none() {
                    self.nonempty[slot / 64] &= !(1 << (slot % 64));
                }
            }
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
        self.mark_nonempty(slot);
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
        self.mark_nonempty(slot);
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

    #[test]
    fn next_nonempty_follows_the_lists() {
        let mut s = SlotLists::new(70);
        assert_eq!(s.next_nonempty(0, 69), None);
        s.move_front(0, 3);
        s.move_front(1, 66);
        assert_eq!(s.next_nonempty(0, 69), Some(3));
        assert_eq!(s.next_nonempty(4, 69), Some(66));
        assert_eq!(s.next_nonempty(4, 65), None);
        assert_eq!(s.next_nonempty(67, 69), None);
        s.move_tail(0, 66);
        assert_eq!(s.next_nonempty(0, 69), Some(66));
        s.remove(1);
        assert_eq!(s.next_nonempty(0, 69), Some(66));
        s.remove(0);
        assert_eq!(s.next_nonempty(0, 69), None);
        for slot in 0..70 {
            assert!(s.is_empty(slot));
        }
    }
}
