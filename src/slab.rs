//! A slab of connections addressed by slot number (the mio token).
//!
//! Freed slots are reused only after the current batch of poll events has been
//! dispatched (`recycle`), so a late event in the same batch for a closed
//! connection finds an empty slot instead of a stranger.

pub struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
    released: Vec<usize>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { entries: Vec::new(), free: Vec::new(), released: Vec::new() }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, value: T) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.entries[slot] = Some(value);
                slot
            }
            None => {
                self.entries.push(Some(value));
                self.entries.len() - 1
            }
        }
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut T> {
        self.entries.get_mut(slot).and_then(Option::as_mut)
    }

    pub fn get(&self, slot: usize) -> Option<&T> {
        self.entries.get(slot).and_then(Option::as_ref)
    }

    /// Takes the value out for processing; `put` returns it to the same slot.
    pub fn take(&mut self, slot: usize) -> Option<T> {
        self.entries.get_mut(slot).and_then(Option::take)
    }

    pub fn put(&mut self, slot: usize, value: T) {
        if let Some(entry) = self.entries.get_mut(slot) {
            *entry = Some(value);
        }
    }

    /// Frees a slot whose value was taken (or removes it now).
    pub fn release(&mut self, slot: usize) {
        if let Some(entry) = self.entries.get_mut(slot) {
            *entry = None;
            self.released.push(slot);
        }
    }

    /// Makes released slots reusable: call between event batches.
    pub fn recycle(&mut self) {
        self.free.append(&mut self.released);
    }

    pub fn slots(&self) -> Vec<usize> {
        (0..self.entries.len()).filter(|&i| self.entries[i].is_some()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_slots_wait_for_recycle() {
        let mut slab = Slab::default();
        let a = slab.insert("a");
        slab.release(a);
        let b = slab.insert("b");
        assert_ne!(a, b, "a slot is not reused within the same batch");
        slab.recycle();
        assert_eq!(slab.insert("c"), a);
        assert_eq!(slab.slots().len(), 2);
    }
}
