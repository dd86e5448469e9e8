import sys

from leapkd.cli import main

sys.exit(main())
