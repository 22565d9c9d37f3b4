/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * percpu-bed harness: what mm/percpu.c's chunk functions expect from the
 * rest of mm/percpu.c and from percpu-internal.h with CONFIG_PERCPU_STATS
 * off.  Included after the extracted structs, before the extracted
 * functions.  The driver sets the geometry globals (`init`).
 */
static int pcpu_unit_pages;
static int pcpu_unit_size;
int pcpu_nr_slots;
static int pcpu_free_slot;
int pcpu_sidelined_slot;
int pcpu_to_depopulate_slot;
static size_t pcpu_chunk_struct_size;
struct pcpu_chunk *pcpu_first_chunk;
struct pcpu_chunk *pcpu_reserved_chunk;
struct list_head *pcpu_chunk_lists;
int pcpu_nr_empty_pop_pages;
static unsigned long pcpu_nr_populated;
spinlock_t pcpu_lock;

static inline void pcpu_stats_area_alloc(struct pcpu_chunk *chunk, size_t size) { (void)chunk; (void)size; }
static inline void pcpu_stats_area_dealloc(struct pcpu_chunk *chunk) { (void)chunk; }
static inline void pcpu_stats_chunk_alloc(void) { }
static inline void pcpu_stats_chunk_dealloc(void) { }
