/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Identity lookup (ipcache LPM) and the policy verdict (mc_enforce +
 * mc_policy LPM). See layout.h for the key's bit order.
 */
#ifndef MESHCNI_POLICY_H
#define MESHCNI_POLICY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps_def.h"
#include "lib/parse.h"

/* identity of an address; no ipcache match = world */
static __always_inline __u32 mc_identity_of(const __u32 *addr)
{
	struct mc_ipcache_key k = { .prefixlen = 128 };
	struct mc_ipcache *v;

	__builtin_memcpy(k.addr, addr, 16);
	v = bpf_map_lookup_elem(&mc_ipcache, &k);
	return v ? v->identity : MC_ID_WORLD;
}

enum {
	MC_VERDICT_ALLOW = 0,
	MC_VERDICT_NO_MATCH = 1,
	MC_VERDICT_DENY = 2,
};

/*
 * Verdict for the endpoint `local` in `dir` talking to `peer` with
 * (proto, port). An unenforced direction allows everything. Otherwise two
 * LPM lookups, the peer's identity and "any peer": a DENY from either wins,
 * else an ALLOW from either, else default deny (no match).
 */
static __always_inline int mc_policy_verdict(__u32 local, __u8 dir, __u32 peer,
					     __u8 proto, __be16 port)
{
	struct mc_enforce_key ek = { .identity = local, .dir = dir };
	struct mc_policy_key k = {};
	struct mc_enforce *en;
	struct mc_policy *p1, *p2;

	en = bpf_map_lookup_elem(&mc_enforce, &ek);
	if (!en || !en->enforced)
		return MC_VERDICT_ALLOW;
	k.prefixlen = MC_POLICY_KEY_BITS;
	k.identity = bpf_htonl(local);
	k.dir = dir;
	k.peer = bpf_htonl(peer);
	k.proto = proto;
	k.port = port;
	p1 = bpf_map_lookup_elem(&mc_policy, &k);
	k.peer = 0;
	p2 = bpf_map_lookup_elem(&mc_policy, &k);
	if ((p1 && p1->action == MC_POLICY_DENY) || (p2 && p2->action == MC_POLICY_DENY))
		return MC_VERDICT_DENY;
	if ((p1 && p1->action == MC_POLICY_ALLOW) || (p2 && p2->action == MC_POLICY_ALLOW))
		return MC_VERDICT_ALLOW;
	return MC_VERDICT_NO_MATCH;
}

static __always_inline int mc_enforced(__u32 local, __u8 dir)
{
	struct mc_enforce_key ek = { .identity = local, .dir = dir };
	struct mc_enforce *en = bpf_map_lookup_elem(&mc_enforce, &ek);

	return en && en->enforced;
}

#endif
