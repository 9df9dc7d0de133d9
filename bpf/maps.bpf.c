// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * The map-only object: instantiates and pins every meshcni map without
 * attaching anything, so `meshcni maps create` (and the library's tests) can
 * bring the whole map set up from the same definitions the datapath objects
 * use. Its BTF is also what the layout drift test compares against.
 *
 * The one program keeps the object a normal loadable object (libbpf refuses
 * nothing here, but tools like bpftool expect a program) and counts nothing.
 */
#include "lib/maps_def.h"

SEC("tc")
int mc_maps_anchor(struct __sk_buff *skb)
{
	return 0; /* TC_ACT_OK: never attached, exists for object tooling */
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
