"""The policies shipped with cowlab, registered through the ``cowlab`` entry points.

``kernel_eras`` holds one short function per kernel era, in the kernel's own order;
``reference`` holds the oracle and the trivial bounds (always-copy, always-reuse, random).
"""
