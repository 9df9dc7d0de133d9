# SPDX-License-Identifier: MIT OR Apache-2.0
"""``python -m meshcni.cli``: what the ``meshcni`` script runs (the simulator starts its agents this way)."""
import sys

from . import main

sys.exit(main())
