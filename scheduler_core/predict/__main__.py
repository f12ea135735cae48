"""`python -m scheduler_core.predict train ...`: see `scheduler_core.predict.train`."""

import sys

from scheduler_core.predict.train import main

if __name__ == "__main__":
    sys.exit(main())
