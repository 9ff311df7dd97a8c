import sys

from asuka.cli import console

sys.exit(console())
