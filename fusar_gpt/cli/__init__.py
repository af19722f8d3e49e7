"""Sub-command parsers and handlers of the ``fusar-gpt`` CLI, grouped by theme (see ``fusar_gpt.__main__``).

The handlers import the library inside the function that runs a command, on purpose: building the parsers must
not import torch, transformers or GDAL, so ``fusar-gpt --help``, a mistyped option or ``fusar-gpt score`` answer
in a fraction of a second instead of the several seconds those imports take. The library modules themselves
import each other at module level (tests/test_architecture.py keeps that graph free of cycles).
"""
