import sys

from lab_kit.cli import main

sys.exit(main())
