// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/* Test object: declares every meshcni map (so a load touches the pins) and
 * one program the verifier must reject (reads past the stack), to prove a
 * failed load leaves the node's pinned maps exactly as they were. */
#include "lib/maps_def.h"

SEC("tc")
int mc_reject_me(struct __sk_buff *skb)
{
	volatile char buf[8];
	int i = skb->len; /* unbounded index */

	return buf[i];
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
