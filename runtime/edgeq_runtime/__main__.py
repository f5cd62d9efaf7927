"""``python -m edgeq_runtime`` is ``edgeq-run``."""

import sys

from edgeq_runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
