/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * meshcni's C glue over libbpf, exposed to Python through cffi (API mode).
 *
 * This header is fed verbatim (minus preprocessor lines) to cffi's cdef, so
 * it holds plain declarations only: stdint types, no macros in declarations.
 *
 * Conventions: functions return 0 (or a non-negative count / fd) on success
 * and -errno on failure; they never print. Bulk operations take packed
 * arrays (the bytes of a numpy structured array) and report per-element
 * failures through caller-provided arrays, so a partial failure is always
 * described, never swallowed.
 */
#ifndef MESHCNI_CSRC_MC_BPF_H
#define MESHCNI_CSRC_MC_BPF_H

#include <stdint.h>
#include <stddef.h>

/* one row of the map table in bpf/include/meshcni/maps.h */
struct mc_map_spec {
	const char *name;
	uint32_t type;
	uint32_t key_size;
	uint32_t value_size;
	uint32_t max_entries;
	uint32_t map_flags;
	const char *key_type;   /* "struct mc_svc_key", NULL for ringbufs */
	const char *value_type;
};

struct mc_map_info {
	uint32_t type;
	uint32_t id;
	uint32_t key_size;
	uint32_t value_size;
	uint32_t max_entries;
	uint32_t map_flags;
	char name[16];
};

/* outcome of a bulk operation; see mc_update() */
struct mc_op_result {
	uint32_t done;          /* entries applied */
	uint32_t nfailed;       /* failures recorded in the caller's arrays */
	uint32_t nfailed_total; /* failures seen (may exceed the arrays) */
	int32_t stop_errno;     /* non-zero: stopped early on this errno */
	uint32_t stop_index;    /* index of the entry that stopped it */
	int32_t used_batch;     /* 1: BPF_MAP_*_BATCH, 0: per-element loop */
	uint32_t syscalls;      /* bpf() calls made */
};

/* bulk modes */
enum {
	MC_MODE_AUTO = 0,  /* batch if the kernel takes it for this map, else loop */
	MC_MODE_BATCH = 1, /* batch only: -EOPNOTSUPP if refused */
	MC_MODE_LOOP = 2,  /* per-element loop (in C) */
};

const struct mc_map_spec *mc_map_specs(void);
int mc_map_specs_count(void);
const char *mc_layout_header(void);
int mc_num_possible_cpus(void);
const char *mc_libbpf_version(void);

int mc_map_create(uint32_t type, const char *name, uint32_t key_size,
		  uint32_t value_size, uint32_t max_entries, uint32_t map_flags);
int mc_obj_get(const char *path);
int mc_obj_pin(int fd, const char *path);
int mc_map_info(int fd, struct mc_map_info *out);
int mc_close(int fd);

int mc_update(int fd, const void *keys, const void *values, uint32_t n,
	      uint32_t key_size, uint32_t value_stride, uint64_t elem_flags,
	      int mode, uint32_t *fail_idx, int32_t *fail_errno,
	      uint32_t fail_cap, struct mc_op_result *res);
int mc_delete(int fd, const void *keys, uint32_t n, uint32_t key_size,
	      int mode, uint32_t *fail_idx, int32_t *fail_errno,
	      uint32_t fail_cap, struct mc_op_result *res);
int mc_lookup(int fd, const void *keys, void *values, uint32_t n,
	      uint32_t key_size, uint32_t value_stride, uint8_t *found);

/*
 * One chunk of a full dump. *state: 0 = start, 1 = in progress, 2 = done
 * (set by the call). token is caller scratch of 2 * (key_size + 8) bytes kept
 * between calls. Returns the number of entries written, or -errno (-ENOSPC:
 * cap too small for one hash bucket; call again with a larger cap).
 */
int mc_dump(int fd, uint32_t key_size, uint32_t value_stride, void *keys,
	    void *values, uint32_t cap, int mode, void *token, int *state,
	    int *used_batch);

/* reference-only: one bpf_map_update_elem per call (the benchmark baseline) */
int mc_update_elem(int fd, const void *key, const void *value, uint64_t flags);
int mc_lookup_elem(int fd, const void *key, void *value);

/* ---- object loading ---- */
struct bpf_object;
struct bpf_object *mc_obj_open(const char *path, const char *pin_root,
			       int *err);
int mc_obj_load(struct bpf_object *obj, char *log, size_t log_size);
void mc_obj_close(struct bpf_object *obj);
int mc_obj_map_count(struct bpf_object *obj);
int mc_obj_map_spec(struct bpf_object *obj, int index, struct mc_map_spec *out,
		    char *name_out, size_t name_size, int *pinned);
int mc_obj_map_fd(struct bpf_object *obj, const char *name);
int mc_obj_prog_count(struct bpf_object *obj);
int mc_obj_prog_name(struct bpf_object *obj, int index, char *name_out,
		     size_t name_size, char *sec_out, size_t sec_size);
int mc_obj_prog_fd(struct bpf_object *obj, const char *name);

/* BPF_PROG_TEST_RUN: run a program on a packet, no network needed */
int mc_prog_test_run(int prog_fd, const void *data_in, uint32_t size_in,
		     void *data_out, uint32_t *size_out, uint32_t repeat,
		     uint32_t *retval, uint32_t *duration_ns);

/* ---- attachments (cgroup sock_addr hooks through BPF links) ---- */
struct mc_link_info {
	uint32_t type;        /* enum bpf_link_type */
	uint32_t id;
	uint32_t prog_id;
	uint32_t attach_type; /* cgroup links only */
	uint64_t cgroup_id;   /* cgroup links only; 0 once the cgroup is gone */
};

/* expected attach type libbpf derived from the program's section */
int mc_obj_prog_attach_type(struct bpf_object *obj, const char *name);
int mc_prog_id(int prog_fd);
/* BPF_LINK_CREATE: returns the link fd */
int mc_link_create(int prog_fd, int target_fd, uint32_t attach_type);
int mc_link_update(int link_fd, int new_prog_fd);
int mc_link_detach(int link_fd);
int mc_link_info(int link_fd, struct mc_link_info *out);
/* BPF_PROG_QUERY: program ids attached to target for attach_type; *count in/out */
int mc_prog_query(int target_fd, uint32_t attach_type, uint32_t *prog_ids,
		  uint32_t *count);

/* ---- tc (clsact) attachments, in the caller's network namespace ----
 * where: 1 = ingress, 2 = egress (BPF_TC_INGRESS / BPF_TC_EGRESS).
 * mc_tc_attach creates the clsact qdisc if missing and attaches prog_fd at
 * (handle, priority); replace != 0 replaces what is there. mc_tc_query puts
 * the attached program's id in *prog_id (-ENOENT when nothing is attached).
 */
int mc_tc_attach(int ifindex, int where, uint32_t handle, uint32_t priority,
		 int prog_fd, int replace);
int mc_tc_detach(int ifindex, int where, uint32_t handle, uint32_t priority);
int mc_tc_query(int ifindex, int where, uint32_t handle, uint32_t priority,
		uint32_t *prog_id);
/* remove the clsact qdisc (and with it every tc program) of ifindex */
int mc_tc_hook_destroy(int ifindex);

/* ---- ring buffer: records copied into a caller buffer ----
 * mc_ringbuf_open returns a handle (NULL + *err on failure); mc_ringbuf_poll
 * waits up to timeout_ms and copies whole records of up to rec_size bytes
 * into buf (cap records at most), returning how many it copied; records
 * beyond cap are consumed and discarded, so size cap to what the ring holds.
 */
struct mc_ringbuf;
struct mc_ringbuf *mc_ringbuf_open(int map_fd, uint32_t rec_size, int *err);
int mc_ringbuf_poll(struct mc_ringbuf *rb, void *buf, uint32_t cap,
		    int timeout_ms);
void mc_ringbuf_close(struct mc_ringbuf *rb);

/* setns(2) on an fd (CLONE_NEWNET = 0x40000000) */
int mc_setns(int fd, int nstype);

#endif
