"""``python -m pyalign.ops``: build the C++ ops, or compile the CUDA sources without a GPU."""

import sys

from pyalign.ops._build import main

sys.exit(main())
