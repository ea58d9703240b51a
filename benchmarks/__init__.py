"""Speed benchmarks of metagrad against its peers (learn2learn, higher, torchopt).

Modules:

- :mod:`benchmarks.settings`: the named benchmark settings and their random episodes.
- :mod:`benchmarks.models`: the shared networks, as metagrad models and as plain ``torch.nn``.
- :mod:`benchmarks.peers`: every implementation behind one interface (``step(batch)``).
- :mod:`benchmarks.episodes`: the test-episode implementations (adapt, then predict).
- :mod:`benchmarks.l2l_loader`: loads learn2learn's MAML from its source by path.
- :mod:`benchmarks.measure`: timing, load, memory, FLOPs, matmul ceiling, gradient check.
- :mod:`benchmarks.report`: Markdown tables and the JSON record.
- :mod:`benchmarks.compare`: the side-by-side CLI; :mod:`benchmarks.scaling`: metagrad sweeps.
"""
