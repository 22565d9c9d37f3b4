/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * percpu-bed harness driver, whole-allocator mode: the tree's own
 * pcpu_setup_first_chunk, pcpu_alloc, free_percpu and pcpu_balance_workfn
 * over mm/percpu-km.c (extracted and compiled above this file), under a
 * line protocol on stdin/stdout, one reply line per request:
 *
 *   setup CPUS UNITS STATIC RESERVED DYN UNIT_SIZE ATOM ALLOC
 *            one group of UNITS units, CPUs 0..CPUS-1 on the first ones;
 *            pcpu_alloc_alloc_info + pcpu_setup_first_chunk on a zeroed,
 *            page-aligned block (the embed first chunk), then async work
 *            enabled as percpu_enable_async does -> "ok"
 *   a ID SIZE ALIGN RESERVED ATOMIC
 *            pcpu_alloc(SIZE, ALIGN, RESERVED, GFP_KERNEL or GFP_NOWAIT,
 *            with __GFP_NOWARN) -> "a ORD OFF": the chunk by ordinal (0 the
 *            first chunk, 1 the reserved chunk when there is one, then
 *            chunks in creation order) and the offset from its base_addr;
 *            "a -1 -1" for NULL.  The area must read zero in every unit
 *            (pcpu_alloc clears it); the driver then fills it with 0xa5.
 *   f ID     free_percpu on allocation ID -> "f ok", or "f skip" when ID
 *            has no live allocation
 *   b        pcpu_balance_workfn, the scheduled flag cleared first as the
 *            workqueue does -> "b ok"
 *   s        "s EMPTY POPULATED SCHEDULED NR_SLOTS NR_CHUNKS", then
 *            " L SLOT ORD..." for every non-empty slot list (in list
 *            order), then " C ORD FREE_BYTES <chunk_md: scan_hint
 *            scan_hint_start contig_hint contig_hint_start left_free
 *            right_free first_free nr_bits> NR_POPULATED NR_EMPTY_POP
 *            ISOLATED" for every live chunk by ordinal
 *   v ORD    one chunk's whole state: "v NR_PAGES START_OFFSET END_OFFSET
 *            FREE_BYTES NR_POPULATED NR_EMPTY_POP", chunk_md and every
 *            md_block (8 ints each), then alloc_map, bound_map and
 *            populated words in hex, each list after a "|"
 *   w        what the allocator logged (pr_warn and the like) since the
 *            last "w", messages joined by " / " -> "w MESSAGES"
 *   end      -> "end"
 */

/* live dynamic chunks by base_addr, in creation order */
struct h_ord {
	void *base;
	int ord;
};
static struct h_ord *h_ords;
static int h_nords, h_cap;
static int h_next_ord;
static bool h_in_setup;

static void pcpubed_chunk_created(void *base_addr)
{
	if (h_in_setup)
		return; /* the first chunk: named by pointer below */
	if (h_nords == h_cap) {
		h_cap = h_cap * 2 + 8;
		h_ords = realloc(h_ords, h_cap * sizeof(*h_ords));
	}
	h_ords[h_nords++] = (struct h_ord){ base_addr, h_next_ord++ };
}

static void pcpubed_chunk_destroyed(void *base_addr)
{
	for (int i = 0; i < h_nords; i++)
		if (h_ords[i].base == base_addr) {
			memmove(&h_ords[i], &h_ords[i + 1], (h_nords - i - 1) * sizeof(*h_ords));
			h_nords--;
			return;
		}
	fprintf(stderr, "pcpu_destroy_chunk of a chunk never created (base %p)\n", base_addr);
	abort();
}

static struct pcpu_chunk *h_dyn_chunk(int i)
{
	return (struct pcpu_chunk *)virt_to_page(h_ords[i].base)->index;
}

static int h_ord_of(struct pcpu_chunk *c)
{
	if (c == pcpu_first_chunk)
		return 0;
	if (c && c == pcpu_reserved_chunk)
		return 1;
	for (int i = 0; i < h_nords; i++)
		if (h_ords[i].base == c->base_addr)
			return h_ords[i].ord;
	return -1;
}

static struct pcpu_chunk *h_chunk_by_ord(int ord)
{
	if (ord == 0)
		return pcpu_first_chunk;
	if (ord == 1 && pcpu_reserved_chunk)
		return pcpu_reserved_chunk;
	for (int i = 0; i < h_nords; i++)
		if (h_ords[i].ord == ord)
			return h_dyn_chunk(i);
	return NULL;
}

static void __percpu **h_ptrs;
static size_t h_nptrs;

static void h_remember(long id, void __percpu *ptr)
{
	if ((size_t)id >= h_nptrs) {
		size_t n = (size_t)id * 2 + 16;
		h_ptrs = realloc(h_ptrs, n * sizeof(*h_ptrs));
		memset(h_ptrs + h_nptrs, 0, (n - h_nptrs) * sizeof(*h_ptrs));
		h_nptrs = n;
	}
	h_ptrs[id] = ptr;
}

static void h_setup(int cpus, int units, long static_size, long reserved, long dyn, long unit_size, long atom,
		    long alloc_size)
{
	struct pcpu_alloc_info *ai;
	void *base;

	nr_cpu_ids = cpus;
	ai = pcpu_alloc_alloc_info(1, units);
	if (!ai) {
		printf("error pcpu_alloc_alloc_info failed\n");
		return;
	}
	ai->static_size = static_size;
	ai->reserved_size = reserved;
	ai->dyn_size = dyn;
	ai->unit_size = unit_size;
	ai->atom_size = atom;
	ai->alloc_size = alloc_size;
	ai->groups[0].nr_units = units;
	ai->groups[0].base_offset = 0;
	for (int i = 0; i < units; i++)
		ai->groups[0].cpu_map[i] = i < cpus ? (unsigned int)i : NR_CPUS;
	base = memblock_alloc((size_t)units * unit_size, PAGE_SIZE);
	h_in_setup = true;
	pcpu_setup_first_chunk(ai, base);
	h_in_setup = false;
	h_next_ord = pcpu_reserved_chunk ? 2 : 1;
	pcpu_async_enabled = true;
	printf("ok\n");
}

/* pcpu_alloc's contract: the area reads zero in every possible CPU's unit */
static bool h_check_and_fill(void __percpu *ptr, size_t size)
{
	unsigned int cpu;
	char *addr = __pcpu_ptr_to_addr(ptr);

	for_each_possible_cpu(cpu) {
		char *p = addr + pcpu_unit_offsets[cpu];
		for (size_t i = 0; i < size; i++)
			if (p[i])
				return false;
		memset(p, 0xa5, size);
	}
	return true;
}

static void h_alloc(long id, long size, long align, long reserved, long atomic)
{
	gfp_t gfp = (atomic ? GFP_NOWAIT : GFP_KERNEL) | __GFP_NOWARN;
	void __percpu *ptr = pcpu_alloc(size, align, reserved != 0, gfp);
	struct pcpu_chunk *c;
	char *addr;

	h_remember(id, ptr);
	if (!ptr) {
		printf("a -1 -1\n");
		return;
	}
	if (!h_check_and_fill(ptr, ALIGN((size_t)size, PCPU_MIN_ALLOC_SIZE))) {
		printf("error allocation %ld: the area pcpu_alloc returned is not zeroed in every unit\n", id);
		return;
	}
	addr = __pcpu_ptr_to_addr(ptr);
	c = pcpu_chunk_addr_search(addr);
	printf("a %d %ld\n", h_ord_of(c), (long)(addr - (char *)c->base_addr));
}

static void h_print_md(const struct pcpu_block_md *b)
{
	printf(" %d %d %d %d %d %d %d %d", b->scan_hint, b->scan_hint_start, b->contig_hint, b->contig_hint_start,
	       b->left_free, b->right_free, b->first_free, b->nr_bits);
}

static void h_print_chunk(struct pcpu_chunk *c)
{
	printf(" C %d %d", h_ord_of(c), c->free_bytes);
	h_print_md(&c->chunk_md);
	printf(" %d %d %d", c->nr_populated, c->nr_empty_pop_pages, c->isolated ? 1 : 0);
}

static void h_state(void)
{
	int nr_chunks = 1 + (pcpu_reserved_chunk ? 1 : 0) + h_nords;

	printf("s %d %lu %d %d %d", pcpu_nr_empty_pop_pages, pcpu_nr_populated, pcpu_balance_work.pending ? 1 : 0,
	       pcpu_nr_slots, nr_chunks);
	for (int slot = 0; slot < pcpu_nr_slots; slot++) {
		struct pcpu_chunk *c;

		if (list_empty(&pcpu_chunk_lists[slot]))
			continue;
		printf(" L %d", slot);
		list_for_each_entry(c, &pcpu_chunk_lists[slot], list)
			printf(" %d", h_ord_of(c));
	}
	h_print_chunk(pcpu_first_chunk);
	if (pcpu_reserved_chunk)
		h_print_chunk(pcpu_reserved_chunk);
	for (int i = 0; i < h_nords; i++)
		h_print_chunk(h_dyn_chunk(i));
	printf("\n");
}

static void h_print_words(const unsigned long *w, size_t n)
{
	printf(" |");
	for (size_t i = 0; i < n; i++)
		printf(" %lx", w[i]);
}

static void h_chunk_state(int ord)
{
	struct pcpu_chunk *c = h_chunk_by_ord(ord);
	int bits;

	if (!c) {
		printf("error no live chunk %d\n", ord);
		return;
	}
	bits = pcpu_chunk_map_bits(c);
	printf("v %d %d %d %d %d %d", c->nr_pages, c->start_offset, c->end_offset, c->free_bytes, c->nr_populated,
	       c->nr_empty_pop_pages);
	h_print_md(&c->chunk_md);
	for (int i = 0; i < pcpu_chunk_nr_blocks(c); i++)
		h_print_md(&c->md_blocks[i]);
	h_print_words(c->alloc_map, BITS_TO_LONGS(bits));
	h_print_words(c->bound_map, BITS_TO_LONGS(bits + 1));
	h_print_words(c->populated, BITS_TO_LONGS(c->nr_pages));
	printf("\n");
}

int main(void)
{
	char line[256], cmd[32];
	long id, a1, a2, a3, a4, a5, a6, a7, a8;

	setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	while (fgets(line, sizeof(line), stdin)) {
		if (sscanf(line, "%31s", cmd) != 1)
			continue;
		if (!strcmp(cmd, "setup") &&
		    sscanf(line, "setup %ld %ld %ld %ld %ld %ld %ld %ld", &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8) == 8) {
			if (pcpu_first_chunk)
				printf("error setup twice: start a new driver\n");
			else if (a1 < 1 || a2 < a1 || a1 >= NR_CPUS)
				printf("error bad geometry: %ld cpus on %ld units\n", a1, a2);
			else
				h_setup((int)a1, (int)a2, a3, a4, a5, a6, a7, a8);
		} else if (!strcmp(cmd, "w")) {
			printf("w");
			for (char *m = strtok(pcpubed_logbuf, "\n"); m; m = strtok(NULL, "\n"))
				printf(" / %s", m);
			printf("\n");
			pcpubed_loglen = 0;
			pcpubed_logbuf[0] = 0;
		} else if (!strcmp(cmd, "end")) {
			printf("end\n");
			fflush(stdout);
		} else if (!pcpu_first_chunk) {
			printf("error no allocator: send setup first\n");
		} else if (!strcmp(cmd, "a") && sscanf(line, "a %ld %ld %ld %ld %ld", &id, &a1, &a2, &a3, &a4) == 5) {
			h_alloc(id, a1, a2, a3, a4);
		} else if (!strcmp(cmd, "f") && sscanf(line, "f %ld", &id) == 1) {
			if ((size_t)id < h_nptrs && h_ptrs[id]) {
				free_percpu(h_ptrs[id]);
				h_ptrs[id] = NULL;
				printf("f ok\n");
			} else {
				printf("f skip\n");
			}
		} else if (!strcmp(cmd, "b")) {
			pcpu_balance_work.pending = false;
			pcpu_balance_workfn(&pcpu_balance_work);
			printf("b ok\n");
		} else if (!strcmp(cmd, "s")) {
			h_state();
		} else if (!strcmp(cmd, "v") && sscanf(line, "v %ld", &a1) == 1) {
			h_chunk_state((int)a1);
		} else {
			printf("error unknown request: %s", line);
		}
	}
	return 0;
}
