import sys

from rusts.simulator.runner import main

sys.exit(main())
