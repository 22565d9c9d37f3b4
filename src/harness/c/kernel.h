/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * percpu-bed harness, whole-allocator mode: what pcpu_alloc, free_percpu,
 * the balance work, pcpu_setup_first_chunk and mm/percpu-km.c need beyond
 * shim.h.  Included right after shim.h.
 *
 * Written for this project from the kernel's documented semantics; no
 * kernel code is copied.  The harness is single threaded, so locks are
 * no-ops; the balance work is only recorded as scheduled (the driver runs
 * it when asked, as the model's Percpu::balance is an explicit step);
 * memory comes from the C library (alloc_pages is an aligned calloc, the
 * buddy allocator's alignment to the block's own size included).
 */
#ifndef PCPUBED_HARNESS_KERNEL_H
#define PCPUBED_HARNESS_KERNEL_H

#include <errno.h>
#include <limits.h>
#include <stdarg.h>

#define CONFIG_SMP 1
#define __initconst
#define __flatten
#define __weak __attribute__((weak))
#define _RET_IP_ 0UL

#define PAGE_MASK (~(PAGE_SIZE - 1))
#define PFN_ALIGN(x) (((unsigned long)(x) + (PAGE_SIZE - 1)) & PAGE_MASK)
#define offset_in_page(p) ((unsigned long)(p) & ~PAGE_MASK)
#define SMP_CACHE_BYTES 64
#define clamp(v, lo, hi) min(max(v, lo), hi)
#define is_power_of_2(n) ((n) != 0 && (((n) & ((n) - 1)) == 0))

static inline unsigned int order_base_2(unsigned long n)
{
	return n <= 1 ? 0 : 64 - __builtin_clzl(n - 1);
}
static inline unsigned long roundup_pow_of_two(unsigned long n) { return 1UL << order_base_2(n); }
static inline unsigned long pcpubed_gcd(unsigned long a, unsigned long b)
{
	while (b) {
		unsigned long t = a % b;
		a = b;
		b = t;
	}
	return a;
}
static inline unsigned long lcm(unsigned long a, unsigned long b) { return a / pcpubed_gcd(a, b) * b; }

/*
 * ----- messages: kept for the driver's "w" request (the last 4 KiB), on
 * stderr too with PCPUBED_VERBOSE set; BUG aborts -----
 */
static int pcpubed_verbose = -1;
static char pcpubed_logbuf[4096];
static size_t pcpubed_loglen;
static inline void pcpubed_log(const char *fmt, ...)
{
	va_list ap;
	int n;

	if (pcpubed_verbose < 0)
		pcpubed_verbose = getenv("PCPUBED_VERBOSE") != NULL;
	if (pcpubed_loglen > sizeof(pcpubed_logbuf) / 2)
		pcpubed_loglen = 0;
	va_start(ap, fmt);
	n = vsnprintf(pcpubed_logbuf + pcpubed_loglen, sizeof(pcpubed_logbuf) - pcpubed_loglen, fmt, ap);
	va_end(ap);
	if (n > 0) {
		if (pcpubed_verbose)
			fputs(pcpubed_logbuf + pcpubed_loglen, stderr);
		pcpubed_loglen = min(pcpubed_loglen + (size_t)n, sizeof(pcpubed_logbuf) - 1);
	}
}
#define KERN_DEBUG ""
#define KERN_EMERG ""
#define printk(...) pcpubed_log(__VA_ARGS__)
#define pr_emerg(...) pcpubed_log(__VA_ARGS__)
#define pr_crit(...) pcpubed_log(__VA_ARGS__)
#define pr_err(...) pcpubed_log(__VA_ARGS__)
#define pr_warn(...) pcpubed_log(__VA_ARGS__)
#define pr_info(...) pcpubed_log(__VA_ARGS__)
#define pr_cont(...) pcpubed_log(__VA_ARGS__)
#define dump_stack() do { } while (0)
#define BUG() do { fprintf(stderr, "BUG() at %s:%d\n", __FILE__, __LINE__); abort(); } while (0)
#define panic(...) do { fprintf(stderr, "panic: "); fprintf(stderr, __VA_ARGS__); abort(); } while (0)
#define WARN(c, ...) ({ int __w = !!(c); if (__w) pcpubed_log(__VA_ARGS__); __w; })

/* ----- CPUs: 0 .. nr_cpu_ids-1 are possible, the driver sets the count ----- */
#define NR_CPUS 4096
static unsigned int nr_cpu_ids = 1;
#define cpu_possible_mask NULL
#define cpumask_pr_args(m) (int)nr_cpu_ids, (void *)(m)
static inline bool cpu_possible(unsigned int cpu) { return cpu < nr_cpu_ids; }
#define for_each_possible_cpu(cpu) for ((cpu) = 0; (cpu) < nr_cpu_ids; (cpu)++)
#define raw_smp_processor_id() 0

/* ----- locks, scheduling, gfp context: one thread, nothing to do ----- */
struct mutex { int unused; };
static inline void mutex_lock(struct mutex *m) { (void)m; }
static inline int mutex_lock_killable(struct mutex *m) { (void)m; return 0; }
static inline void mutex_unlock(struct mutex *m) { (void)m; }
#define spin_lock_irqsave(l, f) do { (void)(l); (f) = 0; } while (0)
#define spin_unlock_irqrestore(l, f) do { (void)(l); (void)(f); } while (0)
#define spin_lock_irq(l) do { (void)(l); } while (0)
#define spin_unlock_irq(l) do { (void)(l); } while (0)
#define cond_resched() do { } while (0)
static inline unsigned int memalloc_noio_save(void) { return 0; }
static inline void memalloc_noio_restore(unsigned int f) { (void)f; }
#define current_gfp_context(g) (g)
#define gfpflags_allow_blocking(g) (!!((g) & __GFP_DIRECT_RECLAIM))

/* ----- the workqueue: schedule_work only records the request ----- */
struct work_struct {
	bool pending;
};
static inline bool schedule_work(struct work_struct *w)
{
	bool was = w->pending;
	w->pending = true;
	return !was;
}

/* ----- instrumentation the allocator calls: off, except chunk lifetime ----- */
static void pcpubed_chunk_created(void *base_addr);
static void pcpubed_chunk_destroyed(void *base_addr);
#define trace_percpu_create_chunk(base) pcpubed_chunk_created(base)
#define trace_percpu_destroy_chunk(base) pcpubed_chunk_destroyed(base)
#define trace_percpu_alloc_percpu_fail(...) do { } while (0)
#define kmemleak_alloc_percpu(...) do { } while (0)
#define kmemleak_free_percpu(p) do { (void)(p); } while (0)
struct obj_cgroup;

/* ----- bitmaps beyond shim.h ----- */
static inline void bitmap_fill(unsigned long *map, unsigned int nr) { bitmap_set(map, 0, nr); }
#define for_each_set_bitrange(rs, re, map, end) \
	for ((rs) = find_next_bit((map), (end), 0), (re) = find_next_zero_bit((map), (end), (rs) + 1); \
	     (rs) < (end); \
	     (rs) = find_next_bit((map), (end), (re) + 1), (re) = find_next_zero_bit((map), (end), (rs) + 1))
#define for_each_clear_bitrange(rs, re, map, end) \
	for ((rs) = find_next_zero_bit((map), (end), 0), (re) = find_next_bit((map), (end), (rs) + 1); \
	     (rs) < (end); \
	     (rs) = find_next_zero_bit((map), (end), (re) + 1), (re) = find_next_bit((map), (end), (rs) + 1))
#define list_first_entry(head, type, member) list_entry((head)->next, type, member)
#define list_for_each_entry_safe(pos, n, head, member) \
	for (pos = list_entry((head)->next, __typeof__(*pos), member), \
	     n = list_entry(pos->member.next, __typeof__(*pos), member); \
	     &pos->member != (head); pos = n, n = list_entry(n->member.next, __typeof__(*n), member))

/* ----- memblock: boot-time memory is zeroed, aligned heap memory ----- */
static inline void *pcpubed_aligned_zalloc(size_t size, size_t align)
{
	void *p;

	if (align < sizeof(void *))
		align = sizeof(void *);
	size = (size + align - 1) / align * align;
	p = aligned_alloc(align, size ? size : align);
	if (p)
		memset(p, 0, size);
	return p;
}
#define memblock_alloc(size, align) pcpubed_aligned_zalloc((size), (align))
#define memblock_free(p, size) do { (void)(size); free(p); } while (0)

/*
 * ----- pages: alloc_pages is one aligned, zeroed block with a struct page
 * per page; virt_to_page finds the block holding an address -----
 */
struct page {
	unsigned long index; /* pcpu_set_page_chunk's field */
	void *pcpubed_addr;
};
struct pcpubed_block {
	char *addr;
	size_t bytes;
	struct page *pages;
};
static struct pcpubed_block *pcpubed_blocks;
static size_t pcpubed_nblocks, pcpubed_cap;

static inline struct page *alloc_pages(gfp_t gfp, unsigned int order)
{
	size_t n = 1UL << order, bytes = n * PAGE_SIZE;
	struct pcpubed_block b = { pcpubed_aligned_zalloc(bytes, bytes), bytes, calloc(n, sizeof(struct page)) };

	(void)gfp;
	if (!b.addr || !b.pages) {
		free(b.addr);
		free(b.pages);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		b.pages[i].pcpubed_addr = b.addr + i * PAGE_SIZE;
	if (pcpubed_nblocks == pcpubed_cap) {
		pcpubed_cap = pcpubed_cap * 2 + 8;
		pcpubed_blocks = realloc(pcpubed_blocks, pcpubed_cap * sizeof(*pcpubed_blocks));
	}
	pcpubed_blocks[pcpubed_nblocks++] = b;
	return b.pages;
}

static inline void __free_pages(struct page *page, unsigned int order)
{
	for (size_t i = 0; i < pcpubed_nblocks; i++) {
		if (pcpubed_blocks[i].pages != page)
			continue;
		if (pcpubed_blocks[i].bytes != (1UL << order) * PAGE_SIZE) {
			fprintf(stderr, "__free_pages: order %u does not match the block allocated\n", order);
			abort();
		}
		free(pcpubed_blocks[i].addr);
		free(pcpubed_blocks[i].pages);
		pcpubed_blocks[i] = pcpubed_blocks[--pcpubed_nblocks];
		return;
	}
	fprintf(stderr, "__free_pages: %p was not allocated by alloc_pages\n", (void *)page);
	abort();
}

static inline void *page_address(const struct page *page) { return page->pcpubed_addr; }
#define nth_page(page, n) ((page) + (n))

static inline struct page *virt_to_page(const void *addr)
{
	for (size_t i = 0; i < pcpubed_nblocks; i++) {
		const struct pcpubed_block *b = &pcpubed_blocks[i];
		if ((const char *)addr >= b->addr && (const char *)addr < b->addr + b->bytes)
			return &b->pages[((const char *)addr - b->addr) / PAGE_SIZE];
	}
	fprintf(stderr, "virt_to_page: %p is in no block alloc_pages gave out\n", addr);
	abort();
}

#endif
