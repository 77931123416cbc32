import sys

from torchkeep.cli import main

sys.exit(main())
