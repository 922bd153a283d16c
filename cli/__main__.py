import sys

from ocrnet_edge.cli import main

sys.exit(main())
