import sys

from gencluster_dev.cli import main

sys.exit(main())
