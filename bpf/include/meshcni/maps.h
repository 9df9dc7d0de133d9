/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The table of every meshcni map: name, type, key, value, capacity, flags.
 *
 * An X-macro so that one list produces both the BTF map definitions in the
 * BPF objects (bpf/lib/maps_def.h) and the spec table csrc/ exports to Python
 * (mc_map_specs[]), which is what userspace uses to create, check and migrate
 * pins. Names are at most 15 characters (BPF_OBJ_NAME_LEN).
 *
 * X(name, type, key type, value type, max_entries, map_flags)
 */
#ifndef MESHCNI_MAPS_H
#define MESHCNI_MAPS_H

#include "layout.h"

#define MC_KV_MAPS(X)                                                          \
	X(mc_svc, BPF_MAP_TYPE_HASH, struct mc_svc_key, struct mc_svc_value,   \
	  MC_SVC_MAX, BPF_F_NO_PREALLOC)                                       \
	X(mc_backends, BPF_MAP_TYPE_HASH, struct mc_backend_key,               \
	  struct mc_backend, MC_BACKENDS_MAX, BPF_F_NO_PREALLOC)               \
	X(mc_revnat, BPF_MAP_TYPE_HASH, struct mc_revnat_key,                  \
	  struct mc_revnat, MC_REVNAT_MAX, BPF_F_NO_PREALLOC)                  \
	X(mc_sock_revnat, BPF_MAP_TYPE_LRU_HASH, struct mc_sock_revnat_key,    \
	  struct mc_sock_revnat, MC_SOCK_REVNAT_MAX, 0)                        \
	X(mc_affinity, BPF_MAP_TYPE_LRU_HASH, struct mc_affinity_key,          \
	  struct mc_affinity, MC_AFFINITY_MAX, 0)                              \
	X(mc_maglev, BPF_MAP_TYPE_HASH, struct mc_maglev_key,                  \
	  struct mc_maglev, MC_MAGLEV_MAX, BPF_F_NO_PREALLOC)                  \
	X(mc_lb_src_ranges, BPF_MAP_TYPE_LPM_TRIE,                             \
	  struct mc_lb_src_range_key, struct mc_lb_src_range,                  \
	  MC_LB_SRC_RANGES_MAX, BPF_F_NO_PREALLOC)                             \
	X(mc_ipcache, BPF_MAP_TYPE_LPM_TRIE, struct mc_ipcache_key,            \
	  struct mc_ipcache, MC_IPCACHE_MAX, BPF_F_NO_PREALLOC)                \
	X(mc_endpoints, BPF_MAP_TYPE_HASH, struct mc_endpoint_key,             \
	  struct mc_endpoint, MC_ENDPOINTS_MAX, 0)                             \
	X(mc_policy, BPF_MAP_TYPE_LPM_TRIE, struct mc_policy_key,              \
	  struct mc_policy, MC_POLICY_MAX, BPF_F_NO_PREALLOC)                  \
	X(mc_enforce, BPF_MAP_TYPE_HASH, struct mc_enforce_key,                \
	  struct mc_enforce, MC_ENFORCE_MAX, 0)                                \
	X(mc_ct, BPF_MAP_TYPE_LRU_HASH, struct mc_ct_key, struct mc_ct,        \
	  MC_CT_MAX, 0)                                                        \
	X(mc_frag, BPF_MAP_TYPE_LRU_HASH, struct mc_frag_key, struct mc_frag,  \
	  MC_FRAG_MAX, 0)                                                      \
	X(mc_nat, BPF_MAP_TYPE_LRU_HASH, struct mc_nat_key, struct mc_nat,     \
	  MC_NAT_MAX, 0)                                                       \
	X(mc_nat_devs, BPF_MAP_TYPE_HASH, struct mc_nat_dev_key,               \
	  struct mc_nat_dev, MC_NAT_DEVS_MAX, 0)                               \
	X(mc_nat_cidrs, BPF_MAP_TYPE_LPM_TRIE, struct mc_nat_cidr_key,         \
	  struct mc_nat_cidr, MC_NAT_CIDRS_MAX, BPF_F_NO_PREALLOC)             \
	X(mc_np_affinity, BPF_MAP_TYPE_LRU_HASH, struct mc_np_affinity_key,    \
	  struct mc_affinity, MC_NP_AFFINITY_MAX, 0)                           \
	X(mc_drops, BPF_MAP_TYPE_PERCPU_ARRAY, struct mc_drop_key,             \
	  struct mc_drop_count, MC_DROP_REASONS, 0)

/* X(name, size in bytes) */
#define MC_RINGBUF_MAPS(X) X(mc_events, MC_EVENTS_BYTES)

#endif /* MESHCNI_MAPS_H */
