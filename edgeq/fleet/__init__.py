"""Past one machine: boards reached over SSH (paramiko) and quantization sweeps run on Ray.

``inventory`` reads ``boards.toml``; ``ssh`` is the one place a connection is opened and its
failures become one-line ``BoardError``s; ``deploy`` puts the runtime wheel and a bundle on a
board; ``probe`` answers ``edgeq boards check``; ``remote`` runs ``edgeq-run bench`` there;
``grid``, ``pareto``, ``sweep`` and ``sweep_report`` make ``edgeq sweep``. paramiko and ray are
imported inside the functions that use them, so ``import edgeq`` never loads either.
"""
