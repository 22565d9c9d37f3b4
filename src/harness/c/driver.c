/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * percpu-bed harness driver: runs the kernel's own chunk allocator
 * functions (extracted from the tree and compiled above this file) under a
 * line protocol on stdin/stdout, one reply line per request:
 *
 *   init PAGES          a fresh chunk of PAGES pages (pcpu_alloc_chunk) -> "ok"
 *   a ID BITS ALIGN AT  pcpu_find_block_fit + pcpu_alloc_area as pcpu_alloc
 *                       calls them (ALIGN in bits, AT 1 = atomic: populated
 *                       pages only), then pcpu_chunk_populated on the pages
 *                       it covers that were not populated -> "a OFF" (bytes,
 *                       -1 when refused); ID names the allocation for "f"
 *   f ID                pcpu_free_area on allocation ID -> "f BYTES", or
 *                       "f skip" when ID was never allocated or is freed
 *   d                   pcpu_chunk_depopulated on every populated empty page
 *                       (what the balance work reclaims) -> "d PAGES"
 *   s                   state: "s free_bytes nr_populated nr_empty_pop_pages"
 *                       then chunk_md and every md_block as 8 ints each
 *                       (scan_hint scan_hint_start contig_hint
 *                       contig_hint_start left_free right_free first_free
 *                       nr_bits)
 *   m                   maps: "m" then alloc_map, bound_map and populated
 *                       words in hex, each list after a "|"
 *   bench SIZE ALIGN N PATTERN PAGES
 *                       seed 002's objects workload over as many chunks as
 *                       it needs, chunks searched by slot as pcpu_alloc does
 *                       -> "bench alloc_ns free_ns chunks refused missed";
 *                       PATTERN random-churn: N random sizes, then N times
 *                       a random one freed and a new one allocated; in that
 *                       second phase "refused" counts requests some chunk's hints
 *                       refused although its bitmap could hold them,
 *                       "missed" new chunks made although one had room
 *   end                 -> "end" (a marker to synchronise on)
 */
#include <time.h>

static struct pcpu_chunk *h_chunk;
static long *h_ids;
static size_t h_nids;

static void h_setup_slots(int pages)
{
	pcpu_unit_pages = pages;
	pcpu_unit_size = pages << PAGE_SHIFT;
	/* the slot layout of pcpu_setup_first_chunk */
	pcpu_sidelined_slot = __pcpu_size_to_slot(pcpu_unit_size) + 1;
	pcpu_free_slot = pcpu_sidelined_slot + 1;
	pcpu_to_depopulate_slot = pcpu_free_slot + 1;
	pcpu_nr_slots = pcpu_to_depopulate_slot + 1;
	free(pcpu_chunk_lists);
	pcpu_chunk_lists = calloc(pcpu_nr_slots, sizeof(pcpu_chunk_lists[0]));
	for (int i = 0; i < pcpu_nr_slots; i++)
		INIT_LIST_HEAD(&pcpu_chunk_lists[i]);
	pcpu_chunk_struct_size = struct_size((struct pcpu_chunk *)0, populated, BITS_TO_LONGS(pcpu_unit_pages));
	pcpu_nr_empty_pop_pages = 0;
	pcpu_nr_populated = 0;
}

static struct pcpu_chunk *h_new_chunk(void)
{
	struct pcpu_chunk *chunk = pcpu_alloc_chunk(GFP_KERNEL);

	if (!chunk) {
		fprintf(stderr, "pcpu_alloc_chunk failed\n");
		exit(3);
	}
	pcpu_chunk_relocate(chunk, -1);
	return chunk;
}

/* pcpu_alloc's populate step: back every page of the area not yet backed */
static void h_populate(struct pcpu_chunk *chunk, int off, int bytes)
{
	unsigned int rs = PFN_DOWN(off), re, end = PFN_UP(off + bytes);

	for_each_clear_bitrange_from(rs, re, chunk->populated, end)
		pcpu_chunk_populated(chunk, rs, re);
}

static void h_print_md(const struct pcpu_block_md *b)
{
	printf(" %d %d %d %d %d %d %d %d", b->scan_hint, b->scan_hint_start, b->contig_hint, b->contig_hint_start,
	       b->left_free, b->right_free, b->first_free, b->nr_bits);
}

static void h_print_words(const unsigned long *w, size_t n)
{
	printf(" |");
	for (size_t i = 0; i < n; i++)
		printf(" %lx", w[i]);
}

static void h_remember(long id, long off)
{
	if ((size_t)id >= h_nids) {
		size_t n = (size_t)id * 2 + 16;
		h_ids = realloc(h_ids, n * sizeof(*h_ids));
		for (size_t i = h_nids; i < n; i++)
			h_ids[i] = -1;
		h_nids = n;
	}
	h_ids[id] = off;
}

/* does an aligned free run of bits exist anywhere in the chunk's bitmap? */
static bool h_fits_somewhere(struct pcpu_chunk *chunk, int bits, int align)
{
	unsigned long size = pcpu_chunk_map_bits(chunk);
	return bitmap_find_next_zero_area_off(chunk->alloc_map, size, 0, bits, align - 1, 0) + bits <= size;
}

/* ----- the multi-chunk benchmark ----- */
static struct pcpu_chunk **b_chunks;
static int b_nchunks;
static long b_refused, b_missed;
static bool b_count;

/*
 * Count a request that some chunk's hints refuse although its bitmap holds
 * an aligned free run for it (pcpu_find_block_fit only reads the chunk).
 */
static void b_count_refusal(int bits, int bit_align)
{
	for (int i = 0; i < b_nchunks; i++)
		if (pcpu_find_block_fit(b_chunks[i], bits, bit_align, false) < 0 &&
		    h_fits_somewhere(b_chunks[i], bits, bit_align)) {
			b_refused++;
			return;
		}
}

/* pcpu_alloc's chunk search (non-atomic, no reserved chunk, no balance work) */
static long b_alloc(size_t size, size_t align, struct pcpu_chunk **owner)
{
	int bits, bit_align, slot, off;
	struct pcpu_chunk *chunk;

	if (align < PCPU_MIN_ALLOC_SIZE)
		align = PCPU_MIN_ALLOC_SIZE;
	size = ALIGN(size, PCPU_MIN_ALLOC_SIZE);
	bits = size >> PCPU_MIN_ALLOC_SHIFT;
	bit_align = align >> PCPU_MIN_ALLOC_SHIFT;
	if (b_count)
		b_count_refusal(bits, bit_align);
	for (;;) {
		for (slot = pcpu_size_to_slot(size); slot <= pcpu_free_slot; slot++) {
			struct list_head *pos, *next, *head = &pcpu_chunk_lists[slot];
			for (pos = head->next; pos != head; pos = next) {
				next = pos->next;
				chunk = list_entry(pos, struct pcpu_chunk, list);
				off = pcpu_find_block_fit(chunk, bits, bit_align, false);
				if (off < 0) {
					if (slot < PCPU_SLOT_FAIL_THRESHOLD)
						pcpu_chunk_move(chunk, 0);
					continue;
				}
				off = pcpu_alloc_area(chunk, bits, bit_align, off);
				if (off >= 0) {
					h_populate(chunk, off, size);
					*owner = chunk;
					return off;
				}
			}
		}
		for (int i = 0; b_count && i < b_nchunks; i++)
			if (h_fits_somewhere(b_chunks[i], bits, bit_align)) {
				b_missed++;
				break;
			}
		b_chunks = realloc(b_chunks, (b_nchunks + 1) * sizeof(*b_chunks));
		b_chunks[b_nchunks++] = h_new_chunk();
	}
}

static double h_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static uint64_t b_rng = 2005;
static uint64_t b_random(void)
{
	/* xorshift64*: the same sequence in every build, fixed or not */
	b_rng ^= b_rng >> 12;
	b_rng ^= b_rng << 25;
	b_rng ^= b_rng >> 27;
	return b_rng * 2685821657736338717ULL;
}

static void h_bench(size_t size, size_t align, long n, const char *pattern, int pages)
{
	struct pcpu_chunk **owner = calloc(n, sizeof(*owner));
	long *off = calloc(n, sizeof(*off));
	bool churn = !strcmp(pattern, "random-churn");
	double t0, t_alloc, t_free = 0;

	for (int i = 0; i < b_nchunks; i++)
		pcpu_free_chunk(b_chunks[i]);
	b_nchunks = 0;
	b_refused = b_missed = 0;
	b_rng = 2005;
	h_setup_slots(pages);
	if (!strcmp(pattern, "second-half-filled")) {
		/* every page: first half free, second half allocated (bench.rs) */
		long pairs = (n * (long)size + 2047) / 2048 + 64;
		struct pcpu_chunk *c1, *c2;
		for (long i = 0; i < pairs; i++) {
			long first = b_alloc(2048, 2048, &c1);
			b_alloc(2048, 2048, &c2);
			pcpu_free_area(c1, first);
		}
	}
	t0 = h_now_ns();
	for (long i = 0; i < n; i++) {
		size_t sz = size;
		if (churn) {
			/* bench.rs's random sizes: log-uniform 4..=1024 */
			size_t top = 1UL << (2 + b_random() % 9);
			sz = top / 2 + b_random() % (top / 2 + 1);
			sz = sz < 4 ? 4 : sz;
		}
		off[i] = b_alloc(sz, align, &owner[i]);
	}
	t_alloc = h_now_ns() - t0;
	if (churn) {
		/* steady churn: free a random live object, allocate a new one
		 * of a random size, n times; the refusals of this phase are what
		 * the free path's hints cost */
		b_refused = b_missed = 0;
		b_count = true;
		t0 = h_now_ns();
		for (long k = 0; k < n; k++) {
			long i = (long)(b_random() % (uint64_t)n);
			size_t top = 1UL << (2 + b_random() % 9);
			size_t sz = top / 2 + b_random() % (top / 2 + 1);
			pcpu_free_area(owner[i], off[i]);
			off[i] = b_alloc(sz < 4 ? 4 : sz, align, &owner[i]);
		}
		t_free = h_now_ns() - t0;
		b_count = false;
	} else {
		t0 = h_now_ns();
		for (long k = 0; k < n; k++) {
			long i;
			if (!strcmp(pattern, "reverse"))
				i = n - 1 - k;
			else if (!strcmp(pattern, "alternating"))
				i = k < (n + 1) / 2 ? 2 * k : 2 * (k - (n + 1) / 2) + 1;
			else
				i = k;
			pcpu_free_area(owner[i], off[i]);
		}
		t_free = h_now_ns() - t0;
	}
	printf("bench %.1f %.1f %d %ld %ld\n", t_alloc / n, t_free / n, b_nchunks, b_refused, b_missed);
	free(owner);
	free(off);
}

int main(void)
{
	char line[256], cmd[32], pattern[64];
	long id, a1, a2, a3;

	setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	while (fgets(line, sizeof(line), stdin)) {
		if (sscanf(line, "%31s", cmd) != 1)
			continue;
		if (!strcmp(cmd, "init") && sscanf(line, "init %ld", &a1) == 1) {
			if (h_chunk)
				pcpu_free_chunk(h_chunk);
			h_setup_slots((int)a1);
			h_chunk = h_new_chunk();
			for (size_t i = 0; i < h_nids; i++)
				h_ids[i] = -1;
			printf("ok\n");
		} else if (!h_chunk && strcmp(cmd, "bench") && strcmp(cmd, "end")) {
			printf("error no chunk: send init first\n");
		} else if (!strcmp(cmd, "a") && sscanf(line, "a %ld %ld %ld %ld", &id, &a1, &a2, &a3) == 4) {
			int off = pcpu_find_block_fit(h_chunk, (int)a1, (size_t)a2, a3 != 0);
			if (off >= 0)
				off = pcpu_alloc_area(h_chunk, (int)a1, (size_t)a2, off);
			if (off >= 0 && !a3)
				h_populate(h_chunk, off, (int)a1 * PCPU_MIN_ALLOC_SIZE);
			h_remember(id, off);
			printf("a %d\n", off);
		} else if (!strcmp(cmd, "f") && sscanf(line, "f %ld", &id) == 1) {
			if ((size_t)id < h_nids && h_ids[id] >= 0) {
				printf("f %d\n", pcpu_free_area(h_chunk, (int)h_ids[id]));
				h_ids[id] = -1;
			} else {
				printf("f skip\n");
			}
		} else if (!strcmp(cmd, "d")) {
			int n = 0;
			for (int i = 0; i < h_chunk->nr_pages; i++)
				if (test_bit(i, h_chunk->populated) &&
				    h_chunk->md_blocks[i].contig_hint == PCPU_BITMAP_BLOCK_BITS) {
					pcpu_chunk_depopulated(h_chunk, i, i + 1);
					n++;
				}
			printf("d %d\n", n);
		} else if (!strcmp(cmd, "s")) {
			printf("s %d %d %d", h_chunk->free_bytes, h_chunk->nr_populated, h_chunk->nr_empty_pop_pages);
			h_print_md(&h_chunk->chunk_md);
			for (int i = 0; i < pcpu_chunk_nr_blocks(h_chunk); i++)
				h_print_md(&h_chunk->md_blocks[i]);
			printf("\n");
		} else if (!strcmp(cmd, "m")) {
			int bits = pcpu_chunk_map_bits(h_chunk);
			printf("m");
			h_print_words(h_chunk->alloc_map, BITS_TO_LONGS(bits));
			h_print_words(h_chunk->bound_map, BITS_TO_LONGS(bits + 1));
			h_print_words(h_chunk->populated, BITS_TO_LONGS(h_chunk->nr_pages));
			printf("\n");
		} else if (!strcmp(cmd, "bench") &&
			   sscanf(line, "bench %ld %ld %ld %63s %ld", &a1, &a2, &id, pattern, &a3) == 5) {
			h_bench((size_t)a1, (size_t)a2, id, pattern, (int)a3);
		} else if (!strcmp(cmd, "end")) {
			printf("end\n");
			fflush(stdout);
		} else {
			printf("error unknown request: %s", line);
		}
	}
	return 0;
}
