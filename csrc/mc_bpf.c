/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * meshcni C glue over libbpf (>= 1.1). See mc_bpf.h for conventions.
 *
 * Only APIs present in libbpf 1.1 are used (bpf_obj_get_info_by_fd rather
 * than the 1.2 bpf_map_get_info_by_fd, no bpf_prog_attach_opts fields past
 * 1.1), so the same source builds on Debian 12 and 13.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <bpf/libbpf_version.h>

#include "mc_bpf.h"
#include "meshcni/maps.h"

#ifndef ENOTSUPP
#define ENOTSUPP 524 /* kernel-internal, but bpf() does return it */
#endif

/* ---- the spec table, expanded from the one list in maps.h ---- */

#define MC_SPEC_KV(_name, _type, _key, _value, _max, _flags)                   \
	{ #_name, _type, sizeof(_key), sizeof(_value), _max, _flags, #_key, #_value },
#define MC_SPEC_RB(_name, _size)                                               \
	{ #_name, BPF_MAP_TYPE_RINGBUF, 0, 0, _size, 0, NULL, NULL },

static const struct mc_map_spec specs[] = {
	MC_KV_MAPS(MC_SPEC_KV) MC_RINGBUF_MAPS(MC_SPEC_RB)
};

const struct mc_map_spec *mc_map_specs(void) { return specs; }
int mc_map_specs_count(void) { return (int)(sizeof(specs) / sizeof(specs[0])); }
int mc_num_possible_cpus(void) { return libbpf_num_possible_cpus(); }

const char *mc_libbpf_version(void)
{
	static char v[32];
	snprintf(v, sizeof(v), "%d.%d", LIBBPF_MAJOR_VERSION, LIBBPF_MINOR_VERSION);
	return v;
}

/* ---- libbpf log capture ----
 * libbpf prints to stderr by default; a library must not. Messages are kept
 * in a buffer that the loader returns with its error (verifier logs included).
 * Not thread-safe: loads are serialised by the Python layer.
 */
static char *capture_buf;
static size_t capture_size, capture_len;

static int mc_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (!capture_buf || level == LIBBPF_DEBUG)
		return 0;
	if (capture_len + 1 >= capture_size)
		return 0;
	int n = vsnprintf(capture_buf + capture_len, capture_size - capture_len,
			  fmt, ap);
	if (n > 0) {
		capture_len += (size_t)n;
		if (capture_len >= capture_size)
			capture_len = capture_size - 1;
	}
	return n;
}

static void capture_start(char *buf, size_t size)
{
	libbpf_set_print(mc_print);
	capture_buf = size ? buf : NULL;
	capture_size = size;
	capture_len = 0;
	if (buf && size)
		buf[0] = 0;
}

static void capture_stop(void)
{
	capture_buf = NULL;
	capture_size = capture_len = 0;
}

/* ---- maps ---- */

int mc_map_create(uint32_t type, const char *name, uint32_t key_size,
		  uint32_t value_size, uint32_t max_entries, uint32_t map_flags)
{
	LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = map_flags);
	int fd = bpf_map_create((enum bpf_map_type)type, name, key_size,
				value_size, max_entries, &opts);
	return fd < 0 ? -errno : fd;
}

int mc_obj_get(const char *path)
{
	int fd = bpf_obj_get(path);
	return fd < 0 ? -errno : fd;
}

int mc_obj_pin(int fd, const char *path)
{
	return bpf_obj_pin(fd, path) ? -errno : 0;
}

int mc_close(int fd)
{
	return close(fd) ? -errno : 0;
}

int mc_map_info(int fd, struct mc_map_info *out)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	out->type = info.type;
	out->id = info.id;
	out->key_size = info.key_size;
	out->value_size = info.value_size;
	out->max_entries = info.max_entries;
	out->map_flags = info.map_flags;
	memcpy(out->name, info.name, sizeof(out->name));
	out->name[sizeof(out->name) - 1] = 0;
	return 0;
}

int mc_update_elem(int fd, const void *key, const void *value, uint64_t flags)
{
	return bpf_map_update_elem(fd, key, value, flags) ? -errno : 0;
}

int mc_lookup_elem(int fd, const void *key, void *value)
{
	return bpf_map_lookup_elem(fd, key, value) ? -errno : 0;
}

/*
 * Errors after which going on is pointless: the map is full (E2BIG from
 * hash maps, ENOSPC from LPM tries) or the call itself is wrong.
 */
static int is_stop_errno(int e)
{
	switch (e) {
	case E2BIG:
	case ENOSPC:
	case EBADF:
	case EFAULT:
	case EPERM:
	case EACCES:
	case ENOMEM:
		return 1;
	default:
		return 0;
	}
}

static int is_unsupported(int e)
{
	return e == ENOTSUPP || e == EOPNOTSUPP || e == EINVAL;
}

static void record_failure(struct mc_op_result *res, uint32_t idx, int e,
			   uint32_t *fail_idx, int32_t *fail_errno,
			   uint32_t fail_cap)
{
	if (res->nfailed < fail_cap) {
		fail_idx[res->nfailed] = idx;
		fail_errno[res->nfailed] = e;
		res->nfailed++;
	}
	res->nfailed_total++;
}

/*
 * Shared driver of update and delete. A batch call applies entries in order
 * and stops at the first failing one, reporting how many went in; the
 * failing entry is recorded and the batch resumes after it, so every failure
 * is seen and everything else is applied. In AUTO mode a refusal of the very
 * first batch (old kernel, or a map type without batch ops) is told apart
 * from a bad first element by retrying that element alone.
 */
static int bulk(int fd, const uint8_t *keys, const uint8_t *values, uint32_t n,
		uint32_t key_size, uint32_t value_stride, uint64_t elem_flags,
		int mode, int is_delete, uint32_t *fail_idx, int32_t *fail_errno,
		uint32_t fail_cap, struct mc_op_result *res)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = elem_flags);
	uint32_t i = 0;

	memset(res, 0, sizeof(*res));
	res->used_batch = mode != MC_MODE_LOOP;

	while (i < n && res->used_batch) {
		__u32 count = n - i;
		int err;

		if (is_delete)
			err = bpf_map_delete_batch(fd, keys + (size_t)i * key_size,
						   &count, &opts);
		else
			err = bpf_map_update_batch(fd, keys + (size_t)i * key_size,
						   values + (size_t)i * value_stride,
						   &count, &opts);
		res->syscalls++;
		if (!err) {
			res->done += n - i;
			return 0;
		}
		err = errno;
		/* A refused command (no batch op for this map type, unknown
		 * command, flags the batch path does not take) leaves count as
		 * passed in; an element failure always reports fewer. */
		if (count >= n - i)
			count = 0;
		res->done += count;
		i += count;

		if (res->done == 0 && count == 0 && is_unsupported(err)) {
			/* refusal of the command, or a bad first element? */
			int e1;

			if (mode == MC_MODE_BATCH && err != EINVAL)
				return -EOPNOTSUPP;
			if (is_delete)
				e1 = bpf_map_delete_elem(fd, keys + (size_t)i * key_size);
			else
				e1 = bpf_map_update_elem(fd, keys + (size_t)i * key_size,
							 values + (size_t)i * value_stride,
							 elem_flags);
			e1 = e1 ? errno : 0;
			res->syscalls++;
			if (e1 == 0) {
				if (mode == MC_MODE_BATCH)
					return -EOPNOTSUPP;
				/* the element is fine: batch is unsupported */
				res->used_batch = 0;
				res->done++;
				i++;
				break;
			}
			err = e1;
		}
		record_failure(res, i, err, fail_idx, fail_errno, fail_cap);
		if (is_stop_errno(err)) {
			res->stop_errno = err;
			res->stop_index = i;
			return 0;
		}
		i++;
	}

	for (; i < n; i++) {
		int err;

		if (is_delete)
			err = bpf_map_delete_elem(fd, keys + (size_t)i * key_size);
		else
			err = bpf_map_update_elem(fd, keys + (size_t)i * key_size,
						  values + (size_t)i * value_stride,
						  elem_flags);
		res->syscalls++;
		if (!err) {
			res->done++;
			continue;
		}
		err = errno;
		record_failure(res, i, err, fail_idx, fail_errno, fail_cap);
		if (is_stop_errno(err)) {
			res->stop_errno = err;
			res->stop_index = i;
			return 0;
		}
	}
	return 0;
}

int mc_update(int fd, const void *keys, const void *values, uint32_t n,
	      uint32_t key_size, uint32_t value_stride, uint64_t elem_flags,
	      int mode, uint32_t *fail_idx, int32_t *fail_errno,
	      uint32_t fail_cap, struct mc_op_result *res)
{
	return bulk(fd, keys, values, n, key_size, value_stride, elem_flags, mode,
		    0, fail_idx, fail_errno, fail_cap, res);
}

int mc_delete(int fd, const void *keys, uint32_t n, uint32_t key_size,
	      int mode, uint32_t *fail_idx, int32_t *fail_errno,
	      uint32_t fail_cap, struct mc_op_result *res)
{
	return bulk(fd, keys, NULL, n, key_size, 0, 0, mode, 1, fail_idx,
		    fail_errno, fail_cap, res);
}

int mc_lookup(int fd, const void *keys, void *values, uint32_t n,
	      uint32_t key_size, uint32_t value_stride, uint8_t *found)
{
	const uint8_t *k = keys;
	uint8_t *v = values;
	int nfound = 0;

	for (uint32_t i = 0; i < n; i++) {
		if (bpf_map_lookup_elem(fd, k + (size_t)i * key_size,
					v + (size_t)i * value_stride) == 0) {
			found[i] = 1;
			nfound++;
			continue;
		}
		found[i] = 0;
		if (errno != ENOENT)
			return -errno;
	}
	return nfound;
}

static int dump_loop(int fd, uint32_t key_size, uint32_t value_stride,
		     uint8_t *keys, uint8_t *values, uint32_t cap, uint8_t *token,
		     int *state)
{
	uint8_t *prev = token, *next = token + key_size + 8;
	uint32_t n = 0;

	while (n < cap) {
		if (bpf_map_get_next_key(fd, *state == 0 ? NULL : prev, next)) {
			if (errno == ENOENT) {
				*state = 2;
				break;
			}
			return -errno;
		}
		*state = 1;
		memcpy(prev, next, key_size);
		if (bpf_map_lookup_elem(fd, next, values + (size_t)n * value_stride)) {
			if (errno == ENOENT)
				continue; /* deleted since get_next_key */
			return -errno;
		}
		memcpy(keys + (size_t)n * key_size, next, key_size);
		n++;
	}
	return (int)n;
}

int mc_dump(int fd, uint32_t key_size, uint32_t value_stride, void *keys,
	    void *values, uint32_t cap, int mode, void *token, int *state,
	    int *used_batch)
{
	uint8_t *tok = token;
	/* in and out batch tokens are separate halves: the kernel reads one and
	 * writes the other, and for hash maps a token is a bucket index */
	uint8_t *in = tok, *out = tok + key_size + 8;
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	__u32 count = cap;
	int err;

	if (*state == 2)
		return 0;
	if (mode == MC_MODE_LOOP || (*used_batch == 0 && *state != 0)) {
		*used_batch = 0;
		return dump_loop(fd, key_size, value_stride, keys, values, cap, tok,
				 state);
	}

	err = bpf_map_lookup_batch(fd, *state == 0 ? NULL : in, out, keys, values,
				   &count, &opts);
	if (err) {
		err = errno;
		if (err == ENOENT) { /* end of map; count holds the last chunk */
			*state = 2;
			*used_batch = 1;
			return (int)count;
		}
		if (*state == 0 && (err == ENOTSUPP || err == EOPNOTSUPP ||
				    err == EINVAL)) {
			if (mode == MC_MODE_BATCH)
				return -EOPNOTSUPP;
			*used_batch = 0;
			return dump_loop(fd, key_size, value_stride, keys, values,
					 cap, tok, state);
		}
		return -err;
	}
	*used_batch = 1;
	*state = 1;
	memcpy(in, out, key_size + 8);
	return (int)count;
}

/* ---- objects ---- */

struct bpf_object *mc_obj_open(const char *path, const char *pin_root, int *err)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_root);
	struct bpf_object *obj;

	libbpf_set_print(mc_print);
	obj = bpf_object__open_file(path, &opts);
	if (!obj) {
		*err = -errno;
		return NULL;
	}
	*err = 0;
	return obj;
}

int mc_obj_load(struct bpf_object *obj, char *log, size_t log_size)
{
	int err;

	capture_start(log, log_size);
	err = bpf_object__load(obj);
	capture_stop();
	return err ? (errno ? -errno : err) : 0;
}

void mc_obj_close(struct bpf_object *obj)
{
	bpf_object__close(obj);
}

static struct bpf_map *nth_map(struct bpf_object *obj, int index)
{
	struct bpf_map *m;
	int i = 0;

	bpf_object__for_each_map(m, obj) {
		if (i++ == index)
			return m;
	}
	return NULL;
}

int mc_obj_map_count(struct bpf_object *obj)
{
	struct bpf_map *m;
	int n = 0;

	bpf_object__for_each_map(m, obj)
		n++;
	return n;
}

int mc_obj_map_spec(struct bpf_object *obj, int index, struct mc_map_spec *out,
		    char *name_out, size_t name_size, int *pinned)
{
	struct bpf_map *m = nth_map(obj, index);

	if (!m)
		return -ENOENT;
	snprintf(name_out, name_size, "%s", bpf_map__name(m));
	out->name = NULL;
	out->key_type = out->value_type = NULL;
	out->type = bpf_map__type(m);
	out->key_size = bpf_map__key_size(m);
	out->value_size = bpf_map__value_size(m);
	out->max_entries = bpf_map__max_entries(m);
	out->map_flags = bpf_map__map_flags(m);
	*pinned = bpf_map__pin_path(m) != NULL;
	return 0;
}

int mc_obj_map_fd(struct bpf_object *obj, const char *name)
{
	struct bpf_map *m = bpf_object__find_map_by_name(obj, name);

	if (!m)
		return -ENOENT;
	return bpf_map__fd(m);
}

int mc_obj_prog_count(struct bpf_object *obj)
{
	struct bpf_program *p;
	int n = 0;

	bpf_object__for_each_program(p, obj)
		n++;
	return n;
}

int mc_obj_prog_name(struct bpf_object *obj, int index, char *name_out,
		     size_t name_size, char *sec_out, size_t sec_size)
{
	struct bpf_program *p;
	int i = 0;

	bpf_object__for_each_program(p, obj) {
		if (i++ == index) {
			snprintf(name_out, name_size, "%s", bpf_program__name(p));
			snprintf(sec_out, sec_size, "%s", bpf_program__section_name(p));
			return 0;
		}
	}
	return -ENOENT;
}

int mc_obj_prog_fd(struct bpf_object *obj, const char *name)
{
	struct bpf_program *p = bpf_object__find_program_by_name(obj, name);

	if (!p)
		return -ENOENT;
	return bpf_program__fd(p);
}

int mc_prog_test_run(int prog_fd, const void *data_in, uint32_t size_in,
		     void *data_out, uint32_t *size_out, uint32_t repeat,
		     uint32_t *retval, uint32_t *duration_ns)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data_in,
		    .data_size_in = size_in, .data_out = data_out,
		    .data_size_out = size_out ? *size_out : 0,
		    .repeat = repeat);

	if (bpf_prog_test_run_opts(prog_fd, &opts))
		return -errno;
	if (size_out)
		*size_out = opts.data_size_out;
	*retval = opts.retval;
	if (duration_ns)
		*duration_ns = opts.duration;
	return 0;
}

/* ---- attachments ---- */

int mc_obj_prog_attach_type(struct bpf_object *obj, const char *name)
{
	struct bpf_program *p = bpf_object__find_program_by_name(obj, name);

	if (!p)
		return -ENOENT;
	return (int)bpf_program__expected_attach_type(p);
}

int mc_prog_id(int prog_fd)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(prog_fd, &info, &len))
		return -errno;
	return (int)info.id;
}

int mc_link_create(int prog_fd, int target_fd, uint32_t attach_type)
{
	int fd = bpf_link_create(prog_fd, target_fd, attach_type, NULL);

	return fd < 0 ? -errno : fd;
}

int mc_link_update(int link_fd, int new_prog_fd)
{
	return bpf_link_update(link_fd, new_prog_fd, NULL) ? -errno : 0;
}

int mc_link_detach(int link_fd)
{
	return bpf_link_detach(link_fd) ? -errno : 0;
}

int mc_link_info(int link_fd, struct mc_link_info *out)
{
	struct bpf_link_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(link_fd, &info, &len))
		return -errno;
	out->type = info.type;
	out->id = info.id;
	out->prog_id = info.prog_id;
	out->attach_type = 0;
	out->cgroup_id = 0;
	if (info.type == BPF_LINK_TYPE_CGROUP) {
		out->attach_type = info.cgroup.attach_type;
		out->cgroup_id = info.cgroup.cgroup_id;
	}
	return 0;
}

int mc_prog_query(int target_fd, uint32_t attach_type, uint32_t *prog_ids,
		  uint32_t *count)
{
	__u32 flags = 0;

	if (bpf_prog_query(target_fd, attach_type, 0, &flags, prog_ids, count))
		return -errno;
	return 0;
}

/* ---- tc ---- */
#include <sched.h>

int mc_tc_attach(int ifindex, int where, uint32_t handle, uint32_t priority,
		 int prog_fd, int replace)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
		    .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority,
		    .prog_fd = prog_fd, .flags = replace ? BPF_TC_F_REPLACE : 0);
	int rc;

	rc = bpf_tc_hook_create(&hook);
	if (rc && rc != -EEXIST)
		return rc;
	hook.attach_point = where == 2 ? BPF_TC_EGRESS : BPF_TC_INGRESS;
	rc = bpf_tc_attach(&hook, &opts);
	return rc < 0 ? rc : 0;
}

int mc_tc_detach(int ifindex, int where, uint32_t handle, uint32_t priority)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
		    .attach_point = where == 2 ? BPF_TC_EGRESS : BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority);

	return bpf_tc_detach(&hook, &opts);
}

int mc_tc_query(int ifindex, int where, uint32_t handle, uint32_t priority,
		uint32_t *prog_id)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
		    .attach_point = where == 2 ? BPF_TC_EGRESS : BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority);
	int rc = bpf_tc_query(&hook, &opts);

	if (rc)
		return rc;
	*prog_id = opts.prog_id;
	return 0;
}

int mc_tc_hook_destroy(int ifindex)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
		    .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);

	return bpf_tc_hook_destroy(&hook);
}

int mc_setns(int fd, int nstype)
{
	return setns(fd, nstype) ? -errno : 0;
}

/* ---- ring buffer ---- */
struct mc_ringbuf {
	struct ring_buffer *rb;
	uint32_t rec_size;
	uint8_t *buf;
	uint32_t cap, n;
};

static int rb_copy(void *ctx, void *data, size_t size)
{
	struct mc_ringbuf *r = ctx;

	if (r->n >= r->cap)
		return 0; /* no room: discarded (callers size cap to the ring) */
	memset(r->buf + (size_t)r->n * r->rec_size, 0, r->rec_size);
	memcpy(r->buf + (size_t)r->n * r->rec_size, data,
	       size < r->rec_size ? size : r->rec_size);
	r->n++;
	return 0;
}

struct mc_ringbuf *mc_ringbuf_open(int map_fd, uint32_t rec_size, int *err)
{
	struct mc_ringbuf *r = calloc(1, sizeof(*r));

	if (!r) {
		*err = -ENOMEM;
		return NULL;
	}
	r->rec_size = rec_size;
	r->rb = ring_buffer__new(map_fd, rb_copy, r, NULL);
	if (!r->rb) {
		*err = -errno;
		free(r);
		return NULL;
	}
	*err = 0;
	return r;
}

int mc_ringbuf_poll(struct mc_ringbuf *rb, void *buf, uint32_t cap, int timeout_ms)
{
	int rc;

	rb->buf = buf;
	rb->cap = cap;
	rb->n = 0;
	if (cap == 0)
		return 0;
	rc = ring_buffer__poll(rb->rb, timeout_ms);
	if (rc < 0 && rc != -EINTR && rb->n == 0)
		return rc;
	return (int)rb->n;
}

void mc_ringbuf_close(struct mc_ringbuf *rb)
{
	if (!rb)
		return;
	ring_buffer__free(rb->rb);
	free(rb);
}
