# SPDX-License-Identifier: MIT OR Apache-2.0
"""One context-manager shape for every owner of kernel resources."""


class Closing:
    """``with X(...) as x:`` calls ``x.close()`` on exit; subclasses define close()."""

    def close(self) -> None:  # pragma: no cover - always overridden
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
