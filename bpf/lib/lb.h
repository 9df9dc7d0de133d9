/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Socket-level service load balancing: frontend lookup, backend choice and
 * the reverse-translation record, shared by the v4 and v6 hooks. Addresses
 * are the unified 16-byte form of layout.h (IPv4 as ::ffff:a.b.c.d), so one
 * code path serves both families once the hook has built the address.
 */
#ifndef MESHCNI_LB_H
#define MESHCNI_LB_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps_def.h"

#define MC_IPPROTO_TCP 6
#define MC_IPPROTO_UDP 17
#define MC_ECONNREFUSED 111
#define MC_EHOSTUNREACH 113
#define MC_NSEC_PER_SEC 1000000000ULL

/* outcome of a translation attempt */
enum {
	MC_LB_PASS = 0,    /* not a service: leave the socket alone */
	MC_LB_XLATED = 1,  /* rewritten to a backend */
	MC_LB_REFUSE = 2,  /* a service without (usable) backends */
};

static __always_inline void mc_addr_from_ip4(__u32 *w, __u32 ip4)
{

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = ip4;
}

/* splitmix64's finaliser: cheap and good enough to spread netns cookies */
static __always_inline __u64 mc_mix64(__u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/*
 * Pick a backend id for the service whose master entry is `svc`.
 *
 * The socket-layer "client" is the network namespace (a pod): its cookie is
 * the key for ClientIP affinity (as Cilium does) and for Maglev, because at
 * connect() time the source address and port are usually not chosen yet.
 * Maglev therefore gives per-pod consistency: a pod keeps its backend while
 * the backend stays, and a backend change moves only the pods that must move.
 */
static __always_inline __u32 mc_select_backend(void *ctx,
					       struct mc_svc_key *key,
					       const struct mc_svc_value *svc,
					       __u64 netns_cookie)
{
	struct mc_affinity_key akey = {};
	struct mc_affinity *aff = NULL;
	struct mc_svc_value *slot;
	__u32 backend_id = 0;
	__u64 now = 0;

	if (svc->flags & MC_SVC_F_AFFINITY) {
		akey.client_cookie = netns_cookie;
		akey.svc_id = svc->svc_id;
		now = bpf_ktime_get_ns();
		aff = bpf_map_lookup_elem(&mc_affinity, &akey);
		if (aff && aff->last_used_ns +
			   (__u64)svc->affinity_timeout * MC_NSEC_PER_SEC > now) {
			struct mc_backend_key bk = { .backend_id = aff->backend_id };

			/* userspace drops entries of backends that left the
			 * service; this check covers the window before it does */
			if (bpf_map_lookup_elem(&mc_backends, &bk)) {
				aff->last_used_ns = now;
				return aff->backend_id;
			}
		}
	}

	if (svc->flags & MC_SVC_F_MAGLEV) {
		struct mc_maglev_key mk = { .svc_id = svc->svc_id };
		struct mc_maglev *tbl = bpf_map_lookup_elem(&mc_maglev, &mk);

		if (tbl) {
			__u32 idx = (__u32)mc_mix64(netns_cookie ^ svc->svc_id) %
				    MC_MAGLEV_M;

			/* clang drops the bound it can prove; the verifier
			 * cannot, so hide idx from the optimiser first */
			asm volatile("" : "+r"(idx));
			if (idx < MC_MAGLEV_M)
				backend_id = tbl->backend_ids[idx];
		}
	}

	if (!backend_id) {
		key->slot = (bpf_get_prandom_u32() % svc->count) + 1;
		slot = bpf_map_lookup_elem(&mc_svc, key);
		key->slot = 0;
		if (!slot)
			return 0;
		backend_id = slot->backend_id;
	}

	if (svc->flags & MC_SVC_F_AFFINITY) {
		struct mc_affinity val = { .last_used_ns = now,
					   .backend_id = backend_id };

		bpf_map_update_elem(&mc_affinity, &akey, &val, BPF_ANY);
	}
	return backend_id;
}

/*
 * The master entry of the frontend in key (addr, port, proto set) for an
 * in-cluster client. Scope EXT is the one every frontend has; TWO_SCOPES
 * says in-cluster clients have their own backend set at scope INT (eTP
 * Local keeps every backend for them, iTP Local restricts them to this
 * node's). key->scope is left at the scope whose slots the master counts.
 * An INT master that is missing while its EXT master says it exists is a
 * write in progress: the EXT backends serve until it lands.
 */
static __always_inline struct mc_svc_value *mc_lb_master(struct mc_svc_key *key)
{
	struct mc_svc_value *svc, *in;

	key->scope = MC_SVC_SCOPE_EXT;
	key->slot = 0;
	svc = bpf_map_lookup_elem(&mc_svc, key);
	if (svc && (svc->flags & MC_SVC_F_TWO_SCOPES)) {
		key->scope = MC_SVC_SCOPE_INT;
		in = bpf_map_lookup_elem(&mc_svc, key);
		if (in)
			return in;
		key->scope = MC_SVC_SCOPE_EXT;
	}
	return svc;
}

/* Is addr a node's address (ipcache identity host or remote-node)? */
static __always_inline int mc_lb_is_node_addr(const __u8 addr[16])
{
	struct mc_ipcache_key k = { .prefixlen = 128 };
	struct mc_ipcache *v;

	__builtin_memcpy(k.addr, addr, 16);
	v = bpf_map_lookup_elem(&mc_ipcache, &k);
	return v && (v->identity == MC_ID_HOST || v->identity == MC_ID_REMOTE_NODE);
}

/* addr -> the all-zero address of its family (::ffff:0.0.0.0 or ::) */
static __always_inline void mc_lb_wildcard(__u8 addr[16])
{
	int v4 = addr[10] == 0xff && addr[11] == 0xff;
	int i;

#pragma unroll
	for (i = 0; i < 10; i++)
		v4 = v4 && addr[i] == 0;
	__builtin_memset(addr, 0, 16);
	if (v4) {
		addr[10] = 0xff;
		addr[11] = 0xff;
	}
}

/*
 * Translate (addr, port, proto) in place if it is a frontend. On success
 * records (socket cookie, backend) -> frontend so that recvmsg and
 * getpeername can show the service address again.
 */
static __always_inline int mc_lb_xlate(void *ctx, __u8 addr[16], __be16 *port,
				       __u8 proto)
{
	struct mc_svc_key key = {};
	struct mc_svc_value *svc;
	struct mc_backend_key bk;
	struct mc_backend *be;
	struct mc_sock_revnat_key rk = {};
	struct mc_sock_revnat rv = {};

	__builtin_memcpy(key.addr, addr, 16);
	key.port = *port;
	key.proto = proto;
	svc = mc_lb_master(&key);
	if (!svc && mc_lb_is_node_addr(addr)) {
		/* another node's (or this node's unlisted) address: a NodePort
		 * answers on every node, so the wildcard frontend decides */
		mc_lb_wildcard(key.addr);
		svc = mc_lb_master(&key);
		if (svc && !(svc->flags & MC_SVC_F_NODEPORT))
			svc = NULL;
	}
	if (!svc)
		return MC_LB_PASS;
	if (svc->count == 0)
		return MC_LB_REFUSE;

	bk.backend_id = mc_select_backend(ctx, &key, svc, bpf_get_netns_cookie(ctx));
	if (!bk.backend_id)
		return MC_LB_REFUSE;
	be = bpf_map_lookup_elem(&mc_backends, &bk);
	if (!be)
		return MC_LB_REFUSE;

	rk.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rk.addr, be->addr, 16);
	rk.port = be->port;
	__builtin_memcpy(rv.addr, addr, 16);
	rv.port = *port;
	rv.svc_id = svc->svc_id;
	bpf_map_update_elem(&mc_sock_revnat, &rk, &rv, BPF_ANY);

	__builtin_memcpy(addr, be->addr, 16);
	*port = be->port;
	return MC_LB_XLATED;
}

/* The reverse: a backend seen by this socket becomes its frontend again. */
static __always_inline int mc_lb_revnat(void *ctx, __u8 addr[16], __be16 *port)
{
	struct mc_sock_revnat_key rk = {};
	struct mc_sock_revnat *rv;

	rk.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rk.addr, addr, 16);
	rk.port = *port;
	rv = bpf_map_lookup_elem(&mc_sock_revnat, &rk);
	if (!rv)
		return 0;
	__builtin_memcpy(addr, rv->addr, 16);
	*port = rv->port;
	return 1;
}

#endif /* MESHCNI_LB_H */
