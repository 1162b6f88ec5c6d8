"""Training for CCC++ models. Run from the checkout: ``python -m training.train --help``.

Not installed with the ``ccc_nodes`` distribution (the name ``training`` is too common
to claim in site-packages).
"""
