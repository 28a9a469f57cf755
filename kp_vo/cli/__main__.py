"""``python -m kp_vo.cli``: the same as the ``kp-vo`` console script."""

import sys

from kp_vo.cli import main

sys.exit(main())
