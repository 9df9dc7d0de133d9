/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Drop accounting: per-CPU counters indexed by MC_DROP_REASON_* (layout.h,
 * where meshcni.layout.constants() finds the names) and one ring-buffer
 * event per drop. A full ring buffer loses the event, never the counter.
 */
#ifndef MESHCNI_DROP_REASONS_H
#define MESHCNI_DROP_REASONS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/maps_def.h"
#include "lib/parse.h"

#define MC_TC_OK 0
#define MC_TC_SHOT 2

static __always_inline int mc_drop(struct __sk_buff *skb, const struct mc_tuple *t,
				   __u32 reason, __u8 dir, __u32 src_id,
				   __u32 dst_id)
{
	struct mc_drop_key k = { .reason = reason };
	struct mc_drop_count *c;
	struct mc_drop_event *ev;

	c = bpf_map_lookup_elem(&mc_drops, &k);
	if (c) {
		c->packets += 1;
		c->bytes += skb->len;
	}
	ev = bpf_ringbuf_reserve(&mc_events, sizeof(*ev), 0);
	if (ev) {
		ev->ts_ns = bpf_ktime_get_ns();
		__builtin_memcpy(ev->saddr, t->saddr, 16);
		__builtin_memcpy(ev->daddr, t->daddr, 16);
		ev->sport = t->sport;
		ev->dport = t->dport;
		ev->proto = t->proto;
		ev->dir = dir;
		ev->reason = reason;
		ev->src_identity = src_id;
		ev->dst_identity = dst_id;
		ev->ifindex = skb->ifindex;
		ev->pad = 0;
		bpf_ringbuf_submit(ev, 0);
	}
	return MC_TC_SHOT;
}

#endif
