# SPDX-License-Identifier: MIT OR Apache-2.0
"""Controllers: pure functions from cluster state (plain dicts from the informers) to desired datapath state."""
