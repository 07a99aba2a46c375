import sys

from dehazeddpm.cli import main

sys.exit(main())
