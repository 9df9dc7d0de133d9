/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Conntrack over mc_ct (LRU hash, both families). Key scheme in layout.h:
 * the originator's tuple + the admitting hook's policy direction; a reply is
 * the reversed tuple under the opposite direction.
 *
 * TCP: a SYN (no ACK) opens SYN_SENT; the first ACK-bearing reply moves it to
 * ESTABLISHED; a FIN or RST from either side moves it to CLOSING. A SYN
 * without ACK is never a reply (so a reverse connection on the same ports
 * is a new connection and meets policy), and a forward SYN on a CLOSING
 * entry is a new connection. ICMP (parse.h, mc_icmp_ports): only a request
 * opens an entry and is looked up forward, only a reply is looked up as a
 * reply, a message without a pair is never tracked. Entries past expires_ns count as absent; the
 * userspace GC (meshcni.datapath.policy.ct_gc) deletes them.
 */
#ifndef MESHCNI_CONNTRACK_H
#define MESHCNI_CONNTRACK_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/maps_def.h"
#include "lib/parse.h"

#define MC_NSEC 1000000000ULL

enum {
	MC_CT_NEW = 0,
	MC_CT_FORWARD = 1,
	MC_CT_REPLY = 2,
};

static __always_inline void mc_ct_key_of(struct mc_ct_key *k, const struct mc_tuple *t,
					 __u8 dir, int reverse)
{
	if (reverse) {
		__builtin_memcpy(k->saddr, t->daddr, 16);
		__builtin_memcpy(k->daddr, t->saddr, 16);
		k->sport = t->dport;
		k->dport = t->sport;
	} else {
		__builtin_memcpy(k->saddr, t->saddr, 16);
		__builtin_memcpy(k->daddr, t->daddr, 16);
		k->sport = t->sport;
		k->dport = t->dport;
	}
	k->proto = t->proto;
	k->dir = dir;
	k->pad2 = 0;
}

static __always_inline __u64 mc_ct_timeout(__u16 state)
{
	switch (state) {
	case MC_CT_STATE_SYN_SENT:
		return MC_CT_TIMEOUT_SYN_S * MC_NSEC;
	case MC_CT_STATE_ESTABLISHED:
		return MC_CT_TIMEOUT_ESTABLISHED_S * MC_NSEC;
	case MC_CT_STATE_CLOSING:
		return MC_CT_TIMEOUT_CLOSING_S * MC_NSEC;
	default:
		return MC_CT_TIMEOUT_DATAGRAM_S * MC_NSEC;
	}
}

static __always_inline void mc_ct_advance(struct mc_ct *e, const struct mc_tuple *t,
					  int reply, __u32 len, __u64 now)
{
	if (t->proto == MC_PROTO_TCP) {
		if (t->tcp_flags & (MC_TCP_FIN | MC_TCP_RST))
			e->state = MC_CT_STATE_CLOSING;
		else if (e->state == MC_CT_STATE_SYN_SENT && reply &&
			 (t->tcp_flags & MC_TCP_ACK))
			e->state = MC_CT_STATE_ESTABLISHED;
	}
	if (reply)
		e->flags |= MC_CT_F_SEEN_REPLY;
	e->packets += 1;
	e->bytes += len;
	e->expires_ns = now + mc_ct_timeout(e->state);
}

/* forward, reply, or new; updates the entry it found */
static __always_inline int mc_ct_lookup(const struct mc_tuple *t, __u8 dir,
					__u32 len, __u64 now)
{
	struct mc_ct_key k = {};
	struct mc_ct *e;
	int syn_only = t->proto == MC_PROTO_TCP &&
		       (t->tcp_flags & (MC_TCP_SYN | MC_TCP_ACK)) == MC_TCP_SYN;

	if (t->icmp_ct == MC_ICMP_CT_NONE)
		return MC_CT_NEW;
	mc_ct_key_of(&k, t, dir, 0);
	e = t->icmp_ct == MC_ICMP_CT_REPLY ? 0 : bpf_map_lookup_elem(&mc_ct, &k);
	if (e && e->expires_ns > now &&
	    !(syn_only && e->state == MC_CT_STATE_CLOSING)) {
		mc_ct_advance(e, t, 0, len, now);
		return MC_CT_FORWARD;
	}
	if (syn_only || t->icmp_ct == MC_ICMP_CT_REQUEST)
		return MC_CT_NEW;
	mc_ct_key_of(&k, t, dir ^ 1, 1);
	e = bpf_map_lookup_elem(&mc_ct, &k);
	if (e && e->expires_ns > now) {
		mc_ct_advance(e, t, 1, len, now);
		return MC_CT_REPLY;
	}
	return MC_CT_NEW;
}

/* a tracked connection the ICMP error's inner packet belongs to? */
static __always_inline int mc_ct_related(const struct mc_tuple *in, __u8 dir, __u64 now)
{
	struct mc_ct_key k = {};
	struct mc_ct *e;

	/* the inner packet was sent by our side: an error arriving on hook dir
	 * is about a packet that left on the opposite hook. It was either a
	 * forward packet of a connection admitted there (key as is, dir ^ 1)
	 * or a reply of one admitted here (key reversed, dir). */
	mc_ct_key_of(&k, in, dir ^ 1, 0);
	e = bpf_map_lookup_elem(&mc_ct, &k);
	if (e && e->expires_ns > now)
		return 1;
	mc_ct_key_of(&k, in, dir, 1);
	e = bpf_map_lookup_elem(&mc_ct, &k);
	return e && e->expires_ns > now;
}

static __always_inline void mc_ct_create(const struct mc_tuple *t, __u8 dir,
					 __u32 src_identity, __u32 len, __u64 now)
{
	struct mc_ct_key k = {};
	struct mc_ct v = {};

	if (t->icmp_ct == MC_ICMP_CT_REPLY || t->icmp_ct == MC_ICMP_CT_NONE)
		return; /* Linux opens no ICMP flow with these either */
	if (t->proto == MC_PROTO_TCP) {
		if (t->tcp_flags & (MC_TCP_FIN | MC_TCP_RST))
			return; /* nothing to track */
		v.state = (t->tcp_flags & MC_TCP_SYN) ? MC_CT_STATE_SYN_SENT
						      : MC_CT_STATE_ESTABLISHED;
	} else {
		v.state = MC_CT_STATE_DATAGRAM;
	}
	mc_ct_key_of(&k, t, dir, 0);
	v.expires_ns = now + mc_ct_timeout(v.state);
	v.packets = 1;
	v.bytes = len;
	v.src_identity = src_identity;
	bpf_map_update_elem(&mc_ct, &k, &v, BPF_ANY);
}

#endif
