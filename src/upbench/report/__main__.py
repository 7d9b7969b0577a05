import sys

from upbench.report.cli import main

sys.exit(main())
