/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * percpu-bed harness, whole-allocator mode: mm/percpu.c's global state
 * (declared here, set by the tree's own pcpu_setup_first_chunk), the hooks
 * that are off in this configuration (CONFIG_PERCPU_STATS and
 * CONFIG_MEMCG_KMEM unset) and the boot-time dump that only prints.
 * Included after the extracted structs, before the extracted functions.
 */
static int pcpu_unit_pages;
static int pcpu_unit_size;
static int pcpu_nr_units;
static int pcpu_atom_size;
int pcpu_nr_slots;
static int pcpu_free_slot;
int pcpu_sidelined_slot;
int pcpu_to_depopulate_slot;
static size_t pcpu_chunk_struct_size;
static unsigned int pcpu_low_unit_cpu;
static unsigned int pcpu_high_unit_cpu;
void *pcpu_base_addr;
static const int *pcpu_unit_map;
const unsigned long *pcpu_unit_offsets;
static int pcpu_nr_groups;
static const unsigned long *pcpu_group_offsets;
static const size_t *pcpu_group_sizes;
struct pcpu_chunk *pcpu_first_chunk;
struct pcpu_chunk *pcpu_reserved_chunk;
spinlock_t pcpu_lock;
static struct mutex pcpu_alloc_mutex;
struct list_head *pcpu_chunk_lists;
int pcpu_nr_empty_pop_pages;
static unsigned long pcpu_nr_populated;
static void pcpu_balance_workfn(struct work_struct *work);
static struct work_struct pcpu_balance_work;
static bool pcpu_async_enabled;
static bool pcpu_atomic_alloc_failed;

/* the link address of the static percpu area: only its alignment matters */
char __per_cpu_start[1] __attribute__((aligned(1 << PAGE_SHIFT)));

static inline void pcpu_stats_save_ai(const struct pcpu_alloc_info *ai) { (void)ai; }
static inline void pcpu_stats_area_alloc(struct pcpu_chunk *chunk, size_t size) { (void)chunk; (void)size; }
static inline void pcpu_stats_area_dealloc(struct pcpu_chunk *chunk) { (void)chunk; }
static inline void pcpu_stats_chunk_alloc(void) { }
static inline void pcpu_stats_chunk_dealloc(void) { }

static inline bool pcpu_memcg_pre_alloc_hook(size_t size, gfp_t gfp, struct obj_cgroup **objcgp)
{
	(void)size; (void)gfp; (void)objcgp;
	return true;
}
static inline void pcpu_memcg_post_alloc_hook(struct obj_cgroup *objcg, struct pcpu_chunk *chunk, int off, size_t size)
{
	(void)objcg; (void)chunk; (void)off; (void)size;
}
static inline void pcpu_memcg_free_hook(struct pcpu_chunk *chunk, int off, size_t size)
{
	(void)chunk; (void)off; (void)size;
}

static void pcpu_dump_alloc_info(const char *lvl, const struct pcpu_alloc_info *ai)
{
	pcpubed_log("%spcpu-alloc: s%zu r%zu d%zu u%zu\n", lvl, ai->static_size, ai->reserved_size, ai->dyn_size,
		    ai->unit_size);
}
