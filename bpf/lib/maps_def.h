/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * BTF map definitions for every meshcni map, expanded from the one table in
 * include/meshcni/maps.h. Every entry object includes this, so all objects
 * share the same pinned maps (LIBBPF_PIN_BY_NAME under the loader's
 * pin_root_path) and the layouts are recorded in each object's BTF.
 */
#ifndef MESHCNI_MAPS_DEF_H
#define MESHCNI_MAPS_DEF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "meshcni/maps.h"

#define MC_DEFINE_KV_MAP(_name, _type, _key, _value, _max, _flags)            \
	struct {                                                               \
		__uint(type, _type);                                           \
		__type(key, _key);                                             \
		__type(value, _value);                                         \
		__uint(max_entries, _max);                                     \
		__uint(map_flags, _flags);                                     \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                           \
	} _name SEC(".maps");

#define MC_DEFINE_RINGBUF(_name, _size)                                        \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                            \
		__uint(max_entries, _size);                                    \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                           \
	} _name SEC(".maps");

MC_KV_MAPS(MC_DEFINE_KV_MAP)
MC_RINGBUF_MAPS(MC_DEFINE_RINGBUF)

#endif /* MESHCNI_MAPS_DEF_H */
