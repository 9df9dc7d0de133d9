// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * mapbench: the C reference baseline for benchmarks/test_map_churn.py.
 *
 * This is what "as fast as the kernel lets you" looks like when a program
 * talks to libbpf directly, with no Python in the way. The Python benchmarks
 * compare meshcni's numpy bulk path against the numbers printed here.
 *
 *   mapbench --entries N --op update|lpm|lpm-batch [--repeat R]
 *
 * Every repeat starts from a freshly created, empty map (the previous one is
 * closed first), so each repeat does the same work. Only the operation itself
 * is timed, in-process, with clock_gettime(CLOCK_MONOTONIC): map creation,
 * array filling and closing are outside the timed region. One JSON line per
 * repeat goes to stdout:
 *
 *   {"op":"update","entries":N,"seconds":S}
 *
 * Data sets (test_map_churn.py builds exactly the same ones with numpy):
 *
 *   update  BPF_MAP_TYPE_HASH, 8-byte key, 8-byte value,
 *           max_entries = ceil(N * 1.1) = (N * 11 + 9) / 10, default flags
 *           (preallocated). key[i] = i + 1, value[i] = (i + 1) * 3, for
 *           i in [0, N). Timed: ONE bpf_map_update_batch() of all N entries.
 *
 *   lpm     BPF_MAP_TYPE_LPM_TRIE, 20-byte key {u32 prefixlen; u8 addr[16]},
 *           8-byte value {u32 identity; u32 flags}, max_entries = N,
 *           BPF_F_NO_PREALLOC. Prefix i (i in [0, N)) is the IPv4-mapped
 *           ::ffff:a.b.c.d/(96 + p) with
 *               a.b.c.d = 10.0.0.0 + 256 * i   (as a 32-bit integer)
 *               p       = 24 + i % 9            (/24 ... /32)
 *           so every prefix sits in its own /24 block, its host bits are
 *           zero and all N keys are distinct. value = {identity = i + 1,
 *           flags = 0}. Timed: N bpf_map_update_elem() calls (BPF_ANY), one
 *           per prefix: the per-element baseline an agent without batch
 *           support would use.
 *
 * Build: gcc -Wall -O2 -o mapbench mapbench.c -lbpf
 * Needs root (CAP_BPF) for map creation.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <linux/bpf.h>

struct lpm_key {
	uint32_t prefixlen;
	uint8_t addr[16];
};

struct lpm_value {
	uint32_t identity;
	uint32_t flags;
};

_Static_assert(sizeof(struct lpm_key) == 20, "LPM key is 20 bytes");
_Static_assert(sizeof(struct lpm_value) == 8, "LPM value is 8 bytes");

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "mapbench: %s: %s (errno %d)\n", what, strerror(err), err);
	exit(1);
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s --entries N --op update|lpm|lpm-batch [--repeat R]\n", prog);
	exit(2);
}

static double run_update(uint32_t n, const uint64_t *keys, const uint64_t *values)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
	uint32_t max_entries = (uint32_t)(((uint64_t)n * 11 + 9) / 10);
	__u32 count = n;
	double t0, t1;
	int fd, err;

	fd = bpf_map_create(BPF_MAP_TYPE_HASH, "bench", sizeof(uint64_t), sizeof(uint64_t),
			    max_entries, NULL);
	if (fd < 0)
		die("bpf_map_create(hash)", errno);

	t0 = now();
	err = bpf_map_update_batch(fd, keys, values, &count, &opts);
	t1 = now();
	if (err)
		die("bpf_map_update_batch", errno);
	if (count != n) {
		fprintf(stderr, "mapbench: update_batch applied %u of %u entries\n", count, n);
		exit(1);
	}
	close(fd);
	return t1 - t0;
}

static double run_lpm(uint32_t n, const struct lpm_key *keys, const struct lpm_value *values, int batch)
{
	LIBBPF_OPTS(bpf_map_batch_opts, bopts, .elem_flags = BPF_ANY);
	__u32 count = n;
	LIBBPF_OPTS(bpf_map_create_opts, copts, .map_flags = BPF_F_NO_PREALLOC);
	double t0, t1;
	uint32_t i;
	int fd;

	fd = bpf_map_create(BPF_MAP_TYPE_LPM_TRIE, "bench_lpm", sizeof(struct lpm_key),
			    sizeof(struct lpm_value), n, &copts);
	if (fd < 0)
		die("bpf_map_create(lpm_trie)", errno);

	if (batch) {
		t0 = now();
		i = bpf_map_update_batch(fd, keys, values, &count, &bopts) ? 0 : count;
		t1 = now();
		if (i < n)
			die("bpf_map_update_batch(lpm_trie)", errno);
		close(fd);
		return t1 - t0;
	}
	t0 = now();
	for (i = 0; i < n; i++) {
		if (bpf_map_update_elem(fd, &keys[i], &values[i], BPF_ANY))
			break;
	}
	t1 = now();
	if (i < n)
		die("bpf_map_update_elem(lpm_trie)", errno);
	close(fd);
	return t1 - t0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "entries", required_argument, NULL, 'n' },
		{ "op", required_argument, NULL, 'o' },
		{ "repeat", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *op = NULL;
	long entries = 0, repeat = 1;
	uint64_t *hkeys = NULL, *hvalues = NULL;
	struct lpm_key *lkeys = NULL;
	struct lpm_value *lvalues = NULL;
	int c, r;
	uint32_t n, i;

	while ((c = getopt_long(argc, argv, "n:o:r:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			entries = strtol(optarg, NULL, 10);
			break;
		case 'o':
			op = optarg;
			break;
		case 'r':
			repeat = strtol(optarg, NULL, 10);
			break;
		default:
			usage(argv[0]);
		}
	}
	if (!op || entries <= 0 || entries > 100000000 || repeat <= 0)
		usage(argv[0]);
	n = (uint32_t)entries;

	if (strcmp(op, "update") == 0) {
		hkeys = malloc(sizeof(*hkeys) * n);
		hvalues = malloc(sizeof(*hvalues) * n);
		if (!hkeys || !hvalues)
			die("malloc", ENOMEM);
		for (i = 0; i < n; i++) {
			hkeys[i] = (uint64_t)i + 1;
			hvalues[i] = ((uint64_t)i + 1) * 3;
		}
	} else if (strcmp(op, "lpm") == 0 || strcmp(op, "lpm-batch") == 0) {
		if (n > (1u << 24)) {
			fprintf(stderr, "mapbench: lpm: at most %u prefixes\n", 1u << 24);
			return 2;
		}
		lkeys = calloc(n, sizeof(*lkeys));
		lvalues = calloc(n, sizeof(*lvalues));
		if (!lkeys || !lvalues)
			die("calloc", ENOMEM);
		for (i = 0; i < n; i++) {
			uint32_t a = 0x0a000000u + 256u * i;

			lkeys[i].prefixlen = 96 + 24 + i % 9;
			lkeys[i].addr[10] = 0xff;
			lkeys[i].addr[11] = 0xff;
			lkeys[i].addr[12] = a >> 24;
			lkeys[i].addr[13] = a >> 16;
			lkeys[i].addr[14] = a >> 8;
			lkeys[i].addr[15] = a;
			lvalues[i].identity = i + 1;
			lvalues[i].flags = 0;
		}
	} else {
		usage(argv[0]);
	}

	for (r = 0; r < repeat; r++) {
		double s = hkeys ? run_update(n, hkeys, hvalues)
				 : run_lpm(n, lkeys, lvalues, strcmp(op, "lpm-batch") == 0);

		printf("{\"op\":\"%s\",\"entries\":%u,\"seconds\":%.9f}\n", op, n, s);
		fflush(stdout);
	}
	free(hkeys);
	free(hvalues);
	free(lkeys);
	free(lvalues);
	return 0;
}
