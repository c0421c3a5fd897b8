import sys

from userrl.cli import main

sys.exit(main())
