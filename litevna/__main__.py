import sys

from litevna.cli import main

sys.exit(main())
