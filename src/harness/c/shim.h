/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * percpu-bed harness: the userspace environment the kernel's own
 * mm/percpu.c allocator functions are compiled in.
 *
 * percpu-bed extracts the chunk allocator (pcpu_alloc_area, pcpu_free_area,
 * the block/chunk hint functions, pcpu_alloc_chunk, ...) by name from the
 * tree it is given and compiles it after this header, so every kernel type,
 * macro and helper those functions use must be defined here.  Everything
 * is written for this project from the kernel's documented semantics
 * (include/linux/bitmap.h, find.h, list.h); no kernel code is copied.
 * Locking, lockdep, tracing and statistics are no-ops: the harness is single
 * threaded and drives one operation at a time.
 */
#ifndef PCPUBED_HARNESS_SHIM_H
#define PCPUBED_HARNESS_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PAGE_SHIFT
#define PAGE_SHIFT 12
#endif
#define PAGE_SIZE (1UL << PAGE_SHIFT)
#define PFN_DOWN(x) ((x) >> PAGE_SHIFT)
#define PFN_UP(x) (((x) + PAGE_SIZE - 1) >> PAGE_SHIFT)

typedef uint64_t u64;
typedef uint32_t u32;
typedef uint8_t u8;
typedef unsigned int gfp_t;
typedef int spinlock_t;
/* gfp: the bits mm/percpu.c tests (blocking allowed, no warning); the
 * values are this shim's, only their meaning matters */
#define __GFP_IO 0x40u
#define __GFP_FS 0x80u
#define __GFP_ZERO 0x100u
#define __GFP_DIRECT_RECLAIM 0x400u
#define __GFP_KSWAPD_RECLAIM 0x800u
#define __GFP_NOWARN 0x2000u
#define __GFP_NOFAIL 0x8000u
#define __GFP_NORETRY 0x10000u
#define __GFP_ACCOUNT 0x400000u
#define GFP_KERNEL (__GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM | __GFP_IO | __GFP_FS)
#define GFP_NOWAIT __GFP_KSWAPD_RECLAIM

#define __init
#define __ro_after_init
#define __read_mostly
#define __maybe_unused __attribute__((unused))
#define __percpu
#define __force
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* a kernel WARN/BUG in the extracted code is a harness failure: say where */
#define WARN_ON(c) pcpubed_warn(!!(c), #c, __FILE__, __LINE__)
#define WARN_ON_ONCE(c) WARN_ON(c)
#define BUG_ON(c) do { if (c) { fprintf(stderr, "BUG_ON(%s) at %s:%d\n", #c, __FILE__, __LINE__); abort(); } } while (0)
static inline int pcpubed_warn(int c, const char *what, const char *file, int line)
{
	if (c)
		fprintf(stderr, "WARN_ON(%s) at %s:%d\n", what, file, line);
	return c;
}

#define lockdep_assert_held(l) do { (void)(l); } while (0)
#define trace_percpu_alloc_percpu(...) do { } while (0)
#define trace_percpu_free_percpu(...) do { } while (0)

#define min(a, b) ((a) < (b) ? (a) : (b))
#define max(a, b) ((a) > (b) ? (a) : (b))
#define min_t(t, a, b) ((t)(a) < (t)(b) ? (t)(a) : (t)(b))
#define max_t(t, a, b) ((t)(a) > (t)(b) ? (t)(a) : (t)(b))
#define __ALIGN_MASK(x, mask) (((x) + (mask)) & ~(mask))
#define ALIGN(x, a) __ALIGN_MASK(x, (__typeof__(x))(a) - 1)
#define IS_ALIGNED(x, a) (((x) & ((__typeof__(x))(a) - 1)) == 0)
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))

#define BITS_PER_LONG 64
#define BITS_TO_LONGS(n) DIV_ROUND_UP((n), BITS_PER_LONG)
#define BIT_WORD(n) ((n) / BITS_PER_LONG)
#define BIT_MASK(n) (1UL << ((n) % BITS_PER_LONG))
#define struct_size(p, member, n) (sizeof(*(p)) + sizeof((p)->member[0]) * (n))

static inline int fls(unsigned int x) { return x ? 32 - __builtin_clz(x) : 0; }
static inline unsigned long __ffs(unsigned long x) { return __builtin_ctzl(x); }

/* ----- memory: calloc-backed (the allocator's metadata only) ----- */
static inline int slab_is_available(void) { return 1; }
static inline void *kzalloc(size_t size, gfp_t gfp) { (void)gfp; return calloc(1, size); }
static inline void *__vmalloc(size_t size, gfp_t gfp) { (void)gfp; return calloc(1, size); }
static inline void kvfree(void *p) { free(p); }

/* ----- bit operations (non-atomic suffices: one thread) ----- */
static inline void set_bit(unsigned long nr, unsigned long *map) { map[BIT_WORD(nr)] |= BIT_MASK(nr); }
static inline void clear_bit(unsigned long nr, unsigned long *map) { map[BIT_WORD(nr)] &= ~BIT_MASK(nr); }
#define __set_bit set_bit
#define __clear_bit clear_bit
static inline bool test_bit(unsigned long nr, const unsigned long *map) { return (map[BIT_WORD(nr)] >> (nr % BITS_PER_LONG)) & 1; }

static inline void bitmap_set(unsigned long *map, unsigned int start, unsigned int nr)
{
	for (unsigned int i = start; i < start + nr; i++)
		set_bit(i, map);
}

static inline void bitmap_clear(unsigned long *map, unsigned int start, unsigned int nr)
{
	for (unsigned int i = start; i < start + nr; i++)
		clear_bit(i, map);
}

/* first bit in [offset, size) equal to `want`, else size */
static inline unsigned long pcpubed_find(const unsigned long *map, unsigned long size, unsigned long offset, int want)
{
	while (offset < size) {
		unsigned long w = map[BIT_WORD(offset)];
		if (!want)
			w = ~w;
		w &= ~0UL << (offset % BITS_PER_LONG);
		if (w) {
			unsigned long bit = BIT_WORD(offset) * BITS_PER_LONG + __builtin_ctzl(w);
			return bit < size ? bit : size;
		}
		offset = (BIT_WORD(offset) + 1) * BITS_PER_LONG;
	}
	return size;
}
static inline unsigned long find_next_bit(const unsigned long *map, unsigned long size, unsigned long offset)
{
	return pcpubed_find(map, size, offset, 1);
}
static inline unsigned long find_next_zero_bit(const unsigned long *map, unsigned long size, unsigned long offset)
{
	return pcpubed_find(map, size, offset, 0);
}
static inline unsigned long find_first_bit(const unsigned long *map, unsigned long size) { return find_next_bit(map, size, 0); }
static inline unsigned long find_first_zero_bit(const unsigned long *map, unsigned long size) { return find_next_zero_bit(map, size, 0); }
/* last set bit below size, else size */
static inline unsigned long find_last_bit(const unsigned long *map, unsigned long size)
{
	for (unsigned long i = size; i > 0; i--)
		if (test_bit(i - 1, map))
			return i - 1;
	return size;
}

/*
 * lib/bitmap.c's contract: the first index >= start where nr zero bits
 * begin, with (index + align_offset) aligned to align_mask + 1; a value
 * past size - nr when there is none.
 */
static inline unsigned long bitmap_find_next_zero_area_off(unsigned long *map, unsigned long size, unsigned long start,
							   unsigned int nr, unsigned long align_mask,
							   unsigned long align_offset)
{
	for (;;) {
		unsigned long index = find_next_zero_bit(map, size, start);
		index = __ALIGN_MASK(index + align_offset, align_mask) - align_offset;
		unsigned long end = index + nr;
		if (end > size)
			return end;
		unsigned long busy = find_next_bit(map, end, index);
		if (busy < end) {
			start = busy + 1;
			continue;
		}
		return index;
	}
}

/* linux/find.h: every maximal run [rs, re) of clear bits from rs up to end */
#define for_each_clear_bitrange_from(rs, re, map, end)                                  \
	for ((rs) = find_next_zero_bit((map), (end), (rs)), (re) = find_next_bit((map), (end), (rs) + 1); \
	     (rs) < (end);                                                                          \
	     (rs) = find_next_zero_bit((map), (end), (re) + 1), (re) = find_next_bit((map), (end), (rs) + 1))
#define for_each_set_bitrange_from(rs, re, map, end)                                    \
	for ((rs) = find_next_bit((map), (end), (rs)), (re) = find_next_zero_bit((map), (end), (rs) + 1); \
	     (rs) < (end);                                                                          \
	     (rs) = find_next_bit((map), (end), (re) + 1), (re) = find_next_zero_bit((map), (end), (rs) + 1))

/* ----- lists: a doubly linked circular list with a head ----- */
struct list_head {
	struct list_head *next, *prev;
};
#define LIST_HEAD_INIT(name) { &(name), &(name) }
#define LIST_HEAD(name) struct list_head name = LIST_HEAD_INIT(name)
static inline void INIT_LIST_HEAD(struct list_head *l) { l->next = l->prev = l; }
static inline void pcpubed_list_link(struct list_head *n, struct list_head *prev, struct list_head *next)
{
	next->prev = n;
	n->next = next;
	n->prev = prev;
	prev->next = n;
}
static inline void pcpubed_list_unlink(struct list_head *e)
{
	e->prev->next = e->next;
	e->next->prev = e->prev;
}
static inline void list_add(struct list_head *n, struct list_head *head) { pcpubed_list_link(n, head, head->next); }
static inline void list_add_tail(struct list_head *n, struct list_head *head) { pcpubed_list_link(n, head->prev, head); }
static inline void list_del(struct list_head *e) { pcpubed_list_unlink(e); INIT_LIST_HEAD(e); }
static inline void list_del_init(struct list_head *e) { list_del(e); }
static inline void list_move(struct list_head *e, struct list_head *head) { pcpubed_list_unlink(e); list_add(e, head); }
static inline void list_move_tail(struct list_head *e, struct list_head *head) { pcpubed_list_unlink(e); list_add_tail(e, head); }
static inline int list_empty(const struct list_head *h) { return h->next == h; }
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define list_entry(ptr, type, member) container_of(ptr, type, member)
#define list_for_each_entry(pos, head, member)                                   \
	for (pos = list_entry((head)->next, __typeof__(*pos), member); &pos->member != (head); \
	     pos = list_entry(pos->member.next, __typeof__(*pos), member))

#endif
