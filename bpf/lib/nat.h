/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Packet rewriting and NAT state for the uplink program (nodeport.bpf.c).
 * Key scheme and entry pairs: layout.h, "the node's uplink".
 *
 * Checksums are updated incrementally (bpf_l3/l4_csum_replace), which is
 * right for every ip_summed state the stack hands a tc program, including
 * CHECKSUM_PARTIAL (BPF_F_PSEUDO_HDR then only adjusts the pseudo-header
 * seed). A later fragment has no L4 header: only its addresses change, the
 * first fragment's L4 checksum already covers the whole datagram.
 */
#ifndef MESHCNI_NAT_H
#define MESHCNI_NAT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps_def.h"
#include "lib/parse.h"

#define MC_NSEC_S 1000000000ULL
#define MC_IP4_OFF MC_ETH_HLEN
#define MC_IP4_CSUM (MC_IP4_OFF + 10)
#define MC_IP4_SRC (MC_IP4_OFF + 12)
#define MC_IP4_DST (MC_IP4_OFF + 16)
#define MC_IP6_SRC (MC_ETH_HLEN + 8)
#define MC_IP6_DST (MC_ETH_HLEN + 24)

/* where a packet's L4 fields are, for rewriting */
struct mc_l4 {
	__u32 off;      /* L4 header */
	__u32 csum;     /* its checksum field, 0: none to update */
	__u32 sport;    /* source port field (ICMP echo: the identifier) */
	__u32 dport;
	__u8 has_ports; /* TCP/UDP, or ICMP echo (one identifier for both) */
	__u8 pseudo;    /* the checksum covers the pseudo-header */
	__u8 mangled0;  /* UDP over IPv4: 0 means "no checksum" and stays 0 */
	__u8 pad;
};

static __always_inline int mc_addr_eq(const void *a, const void *b)
{
	const __u32 *x = a, *y = b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline int mc_addr_zero(const void *a)
{
	const __u32 *x = a;

	return !(x[0] | x[1] | x[2] | x[3]);
}

static __always_inline int mc_addr_is_v4(const void *a)
{
	const __u32 *x = a;

	return x[0] == 0 && x[1] == 0 && x[2] == bpf_htonl(0x0000ffff);
}

static __always_inline void mc_l4_of(const struct mc_tuple *t, __u32 l4off, struct mc_l4 *l)
{
	l->off = l4off;
	l->csum = 0;
	l->has_ports = 0;
	l->pseudo = 1;
	l->mangled0 = 0;
	if (t->nonfirst_frag)
		return;
	switch (t->proto) {
	case MC_PROTO_TCP:
		l->csum = l4off + 16;
		l->sport = l4off;
		l->dport = l4off + 2;
		l->has_ports = 1;
		break;
	case MC_PROTO_UDP:
		l->csum = l4off + 6;
		l->sport = l4off;
		l->dport = l4off + 2;
		l->has_ports = 1;
		l->mangled0 = !t->is_v6;
		break;
	case MC_PROTO_ICMP:
	case MC_PROTO_ICMPV6:
		l->csum = l4off + 2;
		l->pseudo = t->proto == MC_PROTO_ICMPV6;
		l->sport = l4off + 4;
		l->dport = l4off + 4;
		l->has_ports = !t->icmp_err && (t->sport || t->dport);
		break;
	}
}

/* the L4 offset of a parsed packet: mc_parse does not return it */
static __always_inline int mc_l4_off(struct __sk_buff *skb, const struct mc_tuple *t, __u32 *off)
{
	__u8 vihl;

	if (t->is_v6) {
		/* the uplink program does not translate IPv6 packets with
		 * extension headers; their L4 offset is not fixed */
		*off = MC_ETH_HLEN + 40;
		return 0;
	}
	if (bpf_skb_load_bytes(skb, MC_ETH_HLEN, &vihl, 1))
		return -1;
	*off = MC_ETH_HLEN + (vihl & 0xf) * 4;
	return 0;
}

static __always_inline __u64 mc_csum_flags(const struct mc_l4 *l, __u64 size)
{
	return size | (l->pseudo ? BPF_F_PSEUDO_HDR : 0) | (l->mangled0 ? BPF_F_MARK_MANGLED_0 : 0);
}

/* rewrite the source (src=1) or destination address of the packet */
static __always_inline int mc_set_addr(struct __sk_buff *skb, const struct mc_tuple *t,
				       const struct mc_l4 *l, int src, const __u32 *old,
				       const __u32 *new)
{
	if (!t->is_v6) {
		__u32 o = old[3], n = new[3];

		if (l->csum && l->pseudo &&
		    bpf_l4_csum_replace(skb, l->csum, o, n, mc_csum_flags(l, 4)))
			return -1;
		if (bpf_l3_csum_replace(skb, MC_IP4_CSUM, o, n, 4))
			return -1;
		return bpf_skb_store_bytes(skb, src ? MC_IP4_SRC : MC_IP4_DST, &n, 4, 0);
	}
	if (l->csum && l->pseudo) {
		__s64 d = bpf_csum_diff((__be32 *)old, 16, (__be32 *)new, 16, 0);

		if (bpf_l4_csum_replace(skb, l->csum, 0, d, mc_csum_flags(l, 0)))
			return -1;
	}
	return bpf_skb_store_bytes(skb, src ? MC_IP6_SRC : MC_IP6_DST, new, 16, 0);
}

static __always_inline int mc_set_port(struct __sk_buff *skb, const struct mc_l4 *l, int src,
				       __be16 old, __be16 new)
{
	if (!l->has_ports || old == new)
		return 0;
	if (l->csum && bpf_l4_csum_replace(skb, l->csum, old, new,
					   2 | (l->mangled0 ? BPF_F_MARK_MANGLED_0 : 0)))
		return -1;
	return bpf_skb_store_bytes(skb, src ? l->sport : l->dport, &new, 2, 0);
}

/* apply entry e to the packet t (whose fields are then updated too) */
static __always_inline int mc_nat_apply(struct __sk_buff *skb, struct mc_tuple *t,
					const struct mc_l4 *l, const struct mc_nat *e)
{
	if (e->xlate & MC_NAT_X_SRC) {
		if (mc_set_addr(skb, t, l, 1, t->saddr, (const __u32 *)e->saddr) ||
		    mc_set_port(skb, l, 1, t->sport, e->sport))
			return -1;
		__builtin_memcpy(t->saddr, e->saddr, 16);
		t->sport = e->sport;
	}
	if (e->xlate & MC_NAT_X_DST) {
		if (mc_set_addr(skb, t, l, 0, t->daddr, (const __u32 *)e->daddr) ||
		    mc_set_port(skb, l, 0, t->dport, e->dport))
			return -1;
		__builtin_memcpy(t->daddr, e->daddr, 16);
		t->dport = e->dport;
	}
	return 0;
}

static __always_inline void mc_nat_key_of(struct mc_nat_key *k, const struct mc_tuple *t,
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

/* ICMP query/reply pairs (mc_icmp_ports): a request carries the identifier
 * as sport and its type as dport, a reply the request type as sport and the
 * identifier as dport; NAT keys use the identifier on both sides of the pair,
 * and ICMP without a pair has no ports */
static __always_inline void mc_echo_fold(struct mc_tuple *t)
{
	if (t->proto == MC_PROTO_ICMP || t->proto == MC_PROTO_ICMPV6) {
		if (t->icmp_ct == MC_ICMP_CT_REQUEST)
			t->dport = t->sport;
		else if (t->icmp_ct == MC_ICMP_CT_REPLY)
			t->sport = t->dport;
		else
			t->sport = t->dport = 0;
	}
}

static __always_inline __u64 mc_nat_timeout(__u8 proto, __u8 state)
{
	if (proto == MC_PROTO_TCP) {
		if (state == MC_CT_STATE_CLOSING)
			return MC_NAT_TIMEOUT_TCP_CLOSING_S * MC_NSEC_S;
		if (state == MC_CT_STATE_ESTABLISHED)
			return MC_NAT_TIMEOUT_TCP_ESTABLISHED_S * MC_NSEC_S;
		return MC_NAT_TIMEOUT_TCP_SYN_S * MC_NSEC_S;
	}
	if (proto == MC_PROTO_UDP)
		return MC_NAT_TIMEOUT_UDP_S * MC_NSEC_S;
	return MC_NAT_TIMEOUT_ICMP_S * MC_NSEC_S;
}

/* TCP state from one packet: FIN/RST close, any ACK establishes, and a SYN
 * on a closed tuple is a new connection (a reused client port) */
static __always_inline __u8 mc_nat_state(const struct mc_tuple *t, __u8 old)
{
	if (t->proto != MC_PROTO_TCP)
		return MC_CT_STATE_DATAGRAM;
	if ((t->tcp_flags & (MC_TCP_SYN | MC_TCP_ACK | MC_TCP_RST | MC_TCP_FIN)) == MC_TCP_SYN)
		return MC_CT_STATE_SYN_SENT;
	if (old == MC_CT_STATE_CLOSING || (t->tcp_flags & (MC_TCP_FIN | MC_TCP_RST)))
		return MC_CT_STATE_CLOSING;
	if (t->tcp_flags & MC_TCP_ACK)
		return MC_CT_STATE_ESTABLISHED;
	return old ? old : MC_CT_STATE_SYN_SENT;
}

/*
 * Refresh e (hit by packet t before translation) and its pair, whose key is
 * the translated packet reversed under e->peer_dir.
 */
static __always_inline void mc_nat_refresh(struct mc_nat *e, const struct mc_tuple *xlated,
					   const struct mc_tuple *t, __u64 now)
{
	struct mc_nat_key pk = {};
	struct mc_nat *p;
	__u8 st = mc_nat_state(t, e->state);
	__u64 exp = now + mc_nat_timeout(t->proto, st);

	e->state = st;
	e->expires_ns = exp;
	mc_nat_key_of(&pk, xlated, e->peer_dir, 1);
	p = bpf_map_lookup_elem(&mc_nat, &pk);
	if (p) {
		p->state = st;
		p->expires_ns = exp;
	}
}

/*
 * Claim a free translated port for a reply key rk (rk->dport is set here):
 * `want` first when it is in the range (a masqueraded flow keeps its port
 * if it can), then pseudo-random ones. An expired entry is free. 0: none.
 */
static __always_inline __be16 mc_nat_claim_loop(struct mc_nat_key *rk, const struct mc_nat *rv,
						__u32 want, __u64 now)
{
	__u32 range = MC_NAT_PORT_MAX - MC_NAT_PORT_MIN + 1;
	__u32 start = bpf_get_prandom_u32();
	struct mc_nat *old;
	__u16 p;
	int i;

	for (i = 0; i < MC_NAT_PORT_TRIES; i++) {
		if (i == 0 && want >= MC_NAT_PORT_MIN)
			p = want;
		else
			p = MC_NAT_PORT_MIN + (start + i * 7919) % range;
		rk->dport = bpf_htons(p);
		if (bpf_map_update_elem(&mc_nat, rk, rv, BPF_NOEXIST) == 0)
			return rk->dport;
		old = bpf_map_lookup_elem(&mc_nat, rk);
		if (old && old->expires_ns <= now &&
		    bpf_map_update_elem(&mc_nat, rk, rv, BPF_ANY) == 0)
			return rk->dport;
	}
	return 0;
}

/* a global function: verified once on its own, not once per caller path */
__attribute__((noinline)) int mc_nat_claim(struct mc_nat_key *rk, const struct mc_nat *rv,
					   __u32 want, __u64 now)
{
	if (!rk || !rv)
		return 0;
	return mc_nat_claim_loop(rk, rv, want, now);
}

#endif
