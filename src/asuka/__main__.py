import sys

from asuka.cli import main

sys.exit(main())
