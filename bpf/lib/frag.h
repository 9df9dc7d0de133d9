/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * IP fragment tracking: a later fragment carries no L4 header, so the ports,
 * L4 protocol and ICMP pairing its datagram's policy and conntrack are decided
 * on come from the first fragment (an IPv6 later fragment names only the
 * header after the fragment header: dest-opts there is not the L4), recorded
 * in mc_frag (layout.h) under the datagram's reassembly key. The first
 * fragment is recorded on every hook it passes, whatever its verdict: the
 * later fragments then meet the same verdict (admitted by its conntrack
 * entry, or denied by the same policy lookup), never a different one.
 */
#ifndef MESHCNI_FRAG_H
#define MESHCNI_FRAG_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "maps_def.h"
#include "parse.h"

/* 0: t has its ports (not a fragment, a first fragment, or a later one whose
 * first was seen); -1: a later fragment whose first fragment was not seen */
static __always_inline int mc_frag_ports(struct mc_tuple *t, __u8 dir)
{
	struct mc_frag_key k = {};
	struct mc_frag *f;

	if (!t->is_frag)
		return 0;
	__builtin_memcpy(k.saddr, t->saddr, 16);
	__builtin_memcpy(k.daddr, t->daddr, 16);
	k.id = t->frag_id;
	k.proto = t->frag_proto;
	k.dir = dir; /* a first fragment seen on the other hook is another datagram's */
	if (!t->nonfirst_frag) {
		struct mc_frag v = { .sport = t->sport, .dport = t->dport,
				     .proto = t->proto, .icmp_ct = t->icmp_ct };

		bpf_map_update_elem(&mc_frag, &k, &v, BPF_ANY);
		return 0;
	}
	f = bpf_map_lookup_elem(&mc_frag, &k);
	if (!f)
		return -1;
	t->sport = f->sport;
	t->dport = f->dport;
	if (f->proto) /* 0: recorded before the field existed (never an L4 in IPv6) */
		t->proto = f->proto;
	t->icmp_ct = f->icmp_ct;
	t->nonfirst_frag = 0;
	return 0;
}

#endif
