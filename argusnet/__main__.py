import sys

from argusnet.cli import main

sys.exit(main())
